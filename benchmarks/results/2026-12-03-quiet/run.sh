#!/bin/bash
cd /work/main
export PYTHONUNBUFFERED=1
for job in e2e pre ks gpu; do
  echo "== $job start $(date -u +%T) $(cat /proc/loadavg)"
  case $job in
    e2e) python benchmarks/zoo_build.py --end-to-end --reference /work/ref --json /work/quiet/zoo_e2e.json ;;
    pre) python benchmarks/pretrain_step.py --reference /work/ref --json /work/quiet/pretrain_step.json ;;
    ks)  python benchmarks/zoo_build.py --ks 128 --seconds 3 --rounds 3 --json /work/quiet/zoo_build.json ;;
    gpu) python benchmarks/gpu_check.py --device cpu --tiny --out /work/quiet/gpu_check ;;
  esac > /work/quiet/$job.log 2>&1
  echo "== $job end $(date -u +%T) rc=$? $(cat /proc/loadavg)"
done
