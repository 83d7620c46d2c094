#!/bin/bash
# wspace compare at the quick preset from an empty directory, timed
D=${1:-/work/cmp9}
rm -rf $D && mkdir -p $D && cd $D
echo "start $(date -u +%T) load $(cat /proc/loadavg)" > timing.txt
/usr/bin/time -v wspace compare --encoders all --seeds 3 --out $D/report --out-dir $D/out --tracking-uri sqlite:///$D/mlflow.db > compare.log 2> compare.err
echo "end $(date -u +%T) rc=$? load $(cat /proc/loadavg)" >> timing.txt
