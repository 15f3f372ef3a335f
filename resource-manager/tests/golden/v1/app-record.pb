app-1765000000000-0007alice"c
etldefault€"J
tarn
app
shell-master
MODEnightly
/user/alice/job.shjob.sh((2Hattempt 1 failed: container app-1765000000000-0007_01_000001 worker lost: app-1765000000000-0007_01_000001w1"E
 app-1765000000000-0007_01_000001 ÿÿÿÿÿÿÿÿÿ*worker w1 was lost(2http://w1:4040:N app-1765000000000-0007_02_000001w2"$
 app-1765000000000-0007_02_000001