#!/usr/bin/env bash
# The aws cli against the gateway: recursive copies both ways, sync (second run copies
# nothing), and list-objects-v2 paging. $1 is the aws executable; the endpoint, keys and
# CA bundle come from the environment (tests/tests/s3.rs).
set -euo pipefail
AWS="$1 --endpoint-url $TARN_S3_ENDPOINT"
work="$TMPDIR/awscli"
mkdir -p "$work/src/sub/deeper" "$work/back"
for i in $(seq 1 12); do head -c $((i * 1000 + 7)) /dev/urandom > "$work/src/f$i.bin"; done
head -c 9000000 /dev/urandom > "$work/src/sub/big.bin"
echo "hello" > "$work/src/sub/deeper/hello.txt"
$AWS s3 mb s3://cli-bucket
$AWS s3 cp --recursive "$work/src" s3://cli-bucket/data/ --only-show-errors
$AWS s3 cp --recursive s3://cli-bucket/data/ "$work/back" --only-show-errors
diff -r "$work/src" "$work/back"
# sync: nothing changed, nothing copied; one file changed (and its size), one copied.
out=$($AWS s3 sync "$work/src" s3://cli-bucket/data/)
[ -z "$out" ] || { echo "sync copied unchanged files: $out"; exit 1; }
echo "changed" > "$work/src/sub/deeper/hello.txt"
out=$($AWS s3 sync "$work/src" s3://cli-bucket/data/)
echo "$out" | grep -q "hello.txt" || { echo "sync missed a change: $out"; exit 1; }
[ "$(echo "$out" | grep -c upload)" = 1 ] || { echo "sync copied more than the change: $out"; exit 1; }
[ "$($AWS s3 cp s3://cli-bucket/data/sub/deeper/hello.txt -)" = "changed" ]
# list-objects-v2 paging: 14 keys in pages of 5.
# (The cli fetches every page; a query applies to each page, so count the keys.)
n=$($AWS s3api list-objects-v2 --bucket cli-bucket --prefix data/ --page-size 5 --query 'Contents[].Key' --output text | wc -w)
[ "$n" = 14 ] || { echo "paged listing found $n keys, not 14"; exit 1; }
# (Text output prints the query once per page: the token is on the last line.)
first=$($AWS s3api list-objects-v2 --bucket cli-bucket --max-items 5 --query 'NextToken' --output text | tail -n1)
rest=$($AWS s3api list-objects-v2 --bucket cli-bucket --starting-token "$first" --page-size 5 --query 'Contents[].Key' --output text | wc -w)
[ "$rest" = 9 ] || { echo "resuming from a token found $rest keys, not 9"; exit 1; }
$AWS s3 rm --recursive s3://cli-bucket/ --only-show-errors
$AWS s3 rb s3://cli-bucket
echo "awscli suite: ok"
