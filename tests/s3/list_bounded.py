"""Listings scan a bounded number of keys per request (tests/tests/s3.rs
`listings_scan_a_bounded_number_of_keys`).

The gateway runs with `list_scan_keys_max` = LIST_SCAN_MAX (small). A bucket holds several
times that many keys, most of them under a few common prefixes of delimiters other than
'/'. boto3's paginators (ListObjectsV2, ListObjects, ListObjectVersions) must then see
pages of at most LIST_SCAN_MAX entries (a page may be empty but truncated, as S3 allows),
and, put together, exactly S3's answer: every key and
common prefix once, in order.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

E = os.environ["TARN_S3_ENDPOINT"]
BOUND = int(os.environ["LIST_SCAN_MAX"])
s3 = boto3.client("s3", endpoint_url=E, region_name="us-east-1", verify=os.environ["TARN_S3_CA"],
                  aws_access_key_id=os.environ["TARN_S3_ACCESS_KEY"],
                  aws_secret_access_key=os.environ["TARN_S3_SECRET_KEY"],
                  config=Config(max_pool_connections=16, s3={"addressing_style": "path"}))
B = "bounded"
s3.create_bucket(Bucket=B)
keys = [f"k{i:03}" for i in range(60)]
keys += [f"g0|x{i:03}" for i in range(100)]
keys += [f"g1|x{i:02}" for i in range(30)]
keys += ["h-a|1", "h-b|2", "d/a|1", "d/a|2", "d/b", "m/x|y", "m/z"]
with ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda k: s3.put_object(Bucket=B, Key=k, Body=b""), keys))
s3.put_object(Bucket=B, Key="m/", Body=b"")  # a directory marker: an object too
keys.append("m/")
assert len(keys) > 4 * BOUND, "the bucket must hold several bounds' worth of keys"


def expected(prefix, delim):
    contents, cps = set(), set()
    for k in keys:
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix):]
        if delim and delim in rest:
            cps.add(prefix + rest[:rest.index(delim) + len(delim)])
        else:
            contents.add(k)
    return sorted(contents), sorted(cps)


START = {"list_objects_v2": "StartAfter", "list_objects": "Marker", "list_object_versions": "KeyMarker"}


def check(op, prefix, delim, page_size=None, after=None):
    kw = {"Bucket": B, "Prefix": prefix}
    if after:
        kw[START[op]] = after
    if delim:
        kw["Delimiter"] = delim
    if page_size:
        kw["PaginationConfig"] = {"PageSize": page_size}
    entries = "Versions" if op == "list_object_versions" else "Contents"
    contents, cps, pages, previous = [], [], 0, None
    for page in s3.get_paginator(op).paginate(**kw):
        pages += 1
        got = [o["Key"] for o in page.get(entries, [])]
        got_cps = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert len(got) + len(got_cps) <= min(BOUND, page_size or BOUND), \
            f"{op} {prefix!r} {delim!r} page {pages}: {len(got)} keys and {len(got_cps)} prefixes: {got} {got_cps}"
        items = sorted(got + got_cps)
        if items and previous is not None:
            assert previous < items[0], f"{op} {prefix!r} {delim!r}: {items[0]!r} after {previous!r}"
        if items:
            previous = items[-1]
        contents += got
        cps += got_cps
    want_contents, want_cps = expected(prefix, delim)
    # S3 lists only what sorts after the start: a common prefix the start rolls up into
    # sorts before it and is not listed again.
    want_contents = [k for k in want_contents if not after or k > after]
    want_cps = [p for p in want_cps if not after or p > after]
    assert contents == want_contents, f"{op} {prefix!r} {delim!r}: contents {contents} != {want_contents}"
    assert cps == want_cps, f"{op} {prefix!r} {delim!r}: prefixes {cps} != {want_cps}"
    # Every entry listed is a key read, and a request reads at most BOUND keys.
    entries_total = len(want_contents) + len(want_cps)
    assert pages >= -(-entries_total // BOUND), f"{op} {prefix!r} {delim!r}: {entries_total} entries in {pages} pages"
    print(f"{op} prefix={prefix!r} delimiter={delim!r} page_size={page_size} after={after!r}: {pages} pages")


for delim, prefix, size in [("|", "", None), ("|", "g", None), ("|", "", 7), ("|", "g0|", None), ("-", "", None),
                            ("/", "", None), (None, "", None)]:
    check("list_objects_v2", prefix, delim, size)
    check("list_objects", prefix, delim, size)
check("list_object_versions", "", "|")
for op in START:
    check(op, "", "|", None, "g0|x050")
    check(op, "", "|", 3, "d/a|1")
check("list_object_versions", "", "-", 5)
print("bounded listings: ok")
