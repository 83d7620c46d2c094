#!/bin/bash
cd /work/cmp3
echo "start $(date -u +%T) $(cat /proc/loadavg)"
/usr/bin/time -v wspace compare --encoders all --seeds 3 --out /work/cmp3/report --out-dir /work/cmp3/out --tracking-uri sqlite:////work/cmp3/mlflow.db > compare.log 2> compare.err
echo "end $(date -u +%T) rc=$? $(cat /proc/loadavg)"
