"""The S3 gateway driven by boto3, the client most pipelines use.

Run by tests/tests/s3.rs against a running cluster and gateway; reads the endpoint,
keys and CA bundle from the environment (TARN_S3_ENDPOINT, TARN_S3_ACCESS_KEY,
TARN_S3_SECRET_KEY, TARN_S3_CA). Each check asserts what S3 does; the first failure
ends the run with a traceback and a non-zero exit.
"""

import base64
import datetime
import hashlib
import os
import sys
import time
import traceback
import urllib.error
import urllib.request
import ssl
import zlib

import boto3
import botocore
import botocore.auth
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["TARN_S3_ENDPOINT"]
AK = os.environ["TARN_S3_ACCESS_KEY"]
SK = os.environ["TARN_S3_SECRET_KEY"]
CA = os.environ.get("TARN_S3_CA") or None
MiB = 1 << 20


def client(ak=AK, sk=SK, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        region_name="us-east-1",
        verify=CA if CA else True,
        config=Config(retries={"max_attempts": 1}, **cfg),
    )


s3 = client(s3={"addressing_style": "path"})


def code_of(fn, *a, **kw):
    """The S3 error code `fn` fails with (None if it succeeds)."""
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


def data(n, seed=1):
    out = bytearray()
    x = seed
    while len(out) < n:
        x = hashlib.sha256(x.to_bytes(8, "little") if isinstance(x, int) else x).digest()
        out += x
    return bytes(out[:n])


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def buckets():
    s3.create_bucket(Bucket="bkt")
    assert code_of(s3.create_bucket, Bucket="bkt") == "BucketAlreadyOwnedByYou"
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "bkt" in names and not any(n.startswith(".") for n in names), names
    s3.head_bucket(Bucket="bkt")
    assert code_of(s3.head_bucket, Bucket="nope-missing") in ("404", "NoSuchBucket")
    assert s3.get_bucket_location(Bucket="bkt").get("LocationConstraint") in (None, "")
    assert "Status" not in s3.get_bucket_versioning(Bucket="bkt")
    assert code_of(s3.create_bucket, Bucket="Bad_Name") == "InvalidBucketName"
    s3.create_bucket(Bucket="tmp-bucket")
    s3.put_object(Bucket="tmp-bucket", Key="x", Body=b"1")
    assert code_of(s3.delete_bucket, Bucket="tmp-bucket") == "BucketNotEmpty"
    s3.delete_object(Bucket="tmp-bucket", Key="x")
    s3.delete_bucket(Bucket="tmp-bucket")
    assert code_of(s3.head_bucket, Bucket="tmp-bucket") in ("404", "NoSuchBucket")


@test
def put_get_head_metadata_and_etag():
    body = data(3 * MiB + 17)
    r = s3.put_object(Bucket="bkt", Key="dir/obj.bin", Body=body, ContentType="application/x-test",
                      Metadata={"owner": "alice", "n": "1"})
    assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), r["ETag"]
    g = s3.get_object(Bucket="bkt", Key="dir/obj.bin")
    assert g["Body"].read() == body
    assert g["ContentType"] == "application/x-test"
    assert g["Metadata"] == {"owner": "alice", "n": "1"}, g["Metadata"]
    assert g["ETag"] == r["ETag"]
    h = s3.head_object(Bucket="bkt", Key="dir/obj.bin")
    assert h["ContentLength"] == len(body) and h["ETag"] == r["ETag"]
    assert code_of(s3.get_object, Bucket="bkt", Key="dir/missing") == "NoSuchKey"
    assert code_of(s3.get_object, Bucket="no-such-bucket", Key="x") == "NoSuchBucket"
    # A PUT into a missing bucket is refused (the bucket is checked at the commit) and
    # makes no bucket.
    assert code_of(s3.put_object, Bucket="no-such-bucket", Key="x", Body=b"data") == "NoSuchBucket"
    assert code_of(s3.put_object, Bucket="no-such-bucket", Key="x", Body=b"") == "NoSuchBucket"
    assert code_of(s3.head_bucket, Bucket="no-such-bucket") in ("404", "NoSuchBucket")
    # Empty object.
    s3.put_object(Bucket="bkt", Key="empty", Body=b"")
    assert s3.get_object(Bucket="bkt", Key="empty")["Body"].read() == b""


@test
def ranges_and_conditional_reads():
    body = data(2 * MiB + 5, seed=2)
    etag = s3.put_object(Bucket="bkt", Key="r.bin", Body=body)["ETag"]
    g = s3.get_object(Bucket="bkt", Key="r.bin", Range="bytes=100-199")
    assert g["Body"].read() == body[100:200] and g["ContentRange"] == "bytes 100-199/%d" % len(body)
    assert s3.get_object(Bucket="bkt", Key="r.bin", Range="bytes=-10")["Body"].read() == body[-10:]
    assert s3.get_object(Bucket="bkt", Key="r.bin", Range="bytes=%d-" % (MiB - 3))["Body"].read() == body[MiB - 3:]
    assert code_of(s3.get_object, Bucket="bkt", Key="r.bin", Range="bytes=%d-" % (len(body) + 5)) == "InvalidRange"
    assert s3.get_object(Bucket="bkt", Key="r.bin", IfMatch=etag)["Body"].read() == body
    assert code_of(s3.get_object, Bucket="bkt", Key="r.bin", IfMatch='"abc"') == "PreconditionFailed"
    assert code_of(s3.get_object, Bucket="bkt", Key="r.bin", IfNoneMatch=etag) == "304"
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    assert code_of(s3.get_object, Bucket="bkt", Key="r.bin", IfModifiedSince=future) == "304"
    assert code_of(s3.get_object, Bucket="bkt", Key="r.bin", IfUnmodifiedSince=past) == "PreconditionFailed"
    assert code_of(s3.head_object, Bucket="bkt", Key="r.bin", IfNoneMatch=etag) == "304"


@test
def checksums_and_digests():
    body = b"checksummed payload " * 1000
    for algo in ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"]:
        r = s3.put_object(Bucket="bkt", Key="ck/" + algo, Body=body, ChecksumAlgorithm=algo)
        assert ("Checksum" + algo) in r, (algo, r.keys())
        h = s3.head_object(Bucket="bkt", Key="ck/" + algo, ChecksumMode="ENABLED")
        assert h.get("Checksum" + algo) == r["Checksum" + algo], (algo, h)
        assert s3.get_object(Bucket="bkt", Key="ck/" + algo, ChecksumMode="ENABLED")["Body"].read() == body
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    s3.put_object(Bucket="bkt", Key="ck/explicit", Body=body, ChecksumCRC32=crc)
    wrong = base64.b64encode((zlib.crc32(body) ^ 1).to_bytes(4, "big")).decode()
    assert code_of(s3.put_object, Bucket="bkt", Key="ck/bad", Body=body, ChecksumCRC32=wrong) == "BadDigest"
    bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert code_of(s3.put_object, Bucket="bkt", Key="ck/bad", Body=body, ContentMD5=bad_md5) == "BadDigest"
    assert code_of(s3.head_object, Bucket="bkt", Key="ck/bad") == "404", "a refused upload left an object"


@test
def conditional_writes():
    s3.put_object(Bucket="bkt", Key="cond", Body=b"v1", IfNoneMatch="*")
    assert code_of(s3.put_object, Bucket="bkt", Key="cond", Body=b"v2", IfNoneMatch="*") == "PreconditionFailed"
    etag = s3.head_object(Bucket="bkt", Key="cond")["ETag"]
    s3.put_object(Bucket="bkt", Key="cond", Body=b"v2", IfMatch=etag)
    assert code_of(s3.put_object, Bucket="bkt", Key="cond", Body=b"v3", IfMatch=etag) == "PreconditionFailed"
    assert s3.get_object(Bucket="bkt", Key="cond")["Body"].read() == b"v2"


@test
def listing_order_paging_and_delimiters():
    s3.create_bucket(Bucket="order")
    keys = ["foo/x", "foo+1/x", "foo-1/x", "foo.txt", "foo/y/z", "fop", "é/x", "a b", "z%"]
    for k in keys:
        s3.put_object(Bucket="order", Key=k, Body=k.encode())
    want = sorted(keys, key=lambda k: k.encode())
    got = [o["Key"] for o in s3.list_objects_v2(Bucket="order")["Contents"]]
    assert got == want, got
    # Paging one key at a time with continuation tokens.
    paged, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="order", MaxKeys=1, **kw)
        paged += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert paged == want, paged
    # The paginator (what most tools use), delimiter and prefix.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="order", Delimiter="/", PaginationConfig={"PageSize": 2})
    keys_d, prefixes = [], []
    for p in pages:
        keys_d += [o["Key"] for o in p.get("Contents", [])]
        prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
    assert keys_d == ["a b", "foo.txt", "fop", "z%"], keys_d
    assert prefixes == ["foo+1/", "foo-1/", "foo/", "é/"], prefixes
    r = s3.list_objects_v2(Bucket="order", Prefix="foo/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["foo/x"]
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["foo/y/"]
    r = s3.list_objects_v2(Bucket="order", Prefix="fo", StartAfter="foo.txt")
    assert [o["Key"] for o in r["Contents"]] == ["foo/x", "foo/y/z", "fop"], r["Contents"]
    # Another delimiter.
    r = s3.list_objects_v2(Bucket="order", Delimiter="-")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["foo-"], r.get("CommonPrefixes")
    # v1 with markers.
    r = s3.list_objects(Bucket="order", MaxKeys=3)
    assert [o["Key"] for o in r["Contents"]] == want[:3] and r["IsTruncated"]
    r = s3.list_objects(Bucket="order", Marker=want[2])
    assert [o["Key"] for o in r["Contents"]] == want[3:]
    # Unversioned buckets answer version listings with "null" versions.
    v = s3.list_object_versions(Bucket="order")
    assert [x["Key"] for x in v["Versions"]] == want and all(x["VersionId"] == "null" for x in v["Versions"])


@test
def deletes_and_directory_markers():
    s3.put_object(Bucket="bkt", Key="del/a/b", Body=b"1")
    s3.delete_object(Bucket="bkt", Key="del/a/b")
    r = s3.list_objects_v2(Bucket="bkt", Prefix="del/", Delimiter="/")
    assert "CommonPrefixes" not in r and "Contents" not in r, r
    s3.delete_object(Bucket="bkt", Key="never-existed")  # succeeds, as on S3
    s3.put_object(Bucket="bkt", Key="folder/", Body=b"")
    r = s3.list_objects_v2(Bucket="bkt", Prefix="folder")
    assert [o["Key"] for o in r["Contents"]] == ["folder/"], r
    assert s3.get_object(Bucket="bkt", Key="folder/")["Body"].read() == b""
    # With a delimiter, the marker of the listed prefix is listed (s3a, s3fs probe so).
    r = s3.list_objects_v2(Bucket="bkt", Prefix="folder/", Delimiter="/", MaxKeys=1)
    assert [o["Key"] for o in r["Contents"]] == ["folder/"], r
    s3.put_object(Bucket="bkt", Key="folder/inner", Body=b"1")
    r = s3.list_objects_v2(Bucket="bkt", Prefix="folder/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["folder/", "folder/inner"], r
    r = s3.list_objects_v2(Bucket="bkt", Prefix="folder/", Delimiter="/", StartAfter="folder/")
    assert [o["Key"] for o in r["Contents"]] == ["folder/inner"], r
    s3.delete_object(Bucket="bkt", Key="folder/inner")
    s3.delete_object(Bucket="bkt", Key="folder/")
    assert code_of(s3.head_object, Bucket="bkt", Key="folder/") == "404"
    for i in range(5):
        s3.put_object(Bucket="bkt", Key="many/%d" % i, Body=b"x")
    r = s3.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": "many/%d" % i} for i in range(5)] + [{"Key": "a/../b"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["many/%d" % i for i in range(5)]
    assert [e["Code"] for e in r["Errors"]] == ["InvalidArgument"], r["Errors"]
    assert "Contents" not in s3.list_objects_v2(Bucket="bkt", Prefix="many/")


@test
def copies():
    body = data(MiB + 3, seed=3)
    s3.put_object(Bucket="bkt", Key="src", Body=body, Metadata={"k": "v"}, ContentType="text/x-src")
    r = s3.copy_object(Bucket="bkt", Key="copy/dst", CopySource={"Bucket": "bkt", "Key": "src"})
    assert r["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    g = s3.get_object(Bucket="bkt", Key="copy/dst")
    assert g["Body"].read() == body and g["Metadata"] == {"k": "v"} and g["ContentType"] == "text/x-src"
    s3.copy_object(Bucket="bkt", Key="copy/dst2", CopySource={"Bucket": "bkt", "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="text/plain")
    h = s3.head_object(Bucket="bkt", Key="copy/dst2")
    assert h["Metadata"] == {"new": "1"} and h["ContentType"] == "text/plain"
    assert code_of(s3.copy_object, Bucket="bkt", Key="copy/x", CopySource={"Bucket": "bkt", "Key": "nope"}) == "NoSuchKey"


@test
def tagging():
    ts = lambda r: {t["Key"]: t["Value"] for t in r["TagSet"]}  # noqa: E731
    # On PUT (x-amz-tagging), counted by GET, read, replaced, removed.
    s3.put_object(Bucket="bkt", Key="tag/a", Body=b"abc", Tagging="team=sales&cost%20center=a%2Fb")
    assert ts(s3.get_object_tagging(Bucket="bkt", Key="tag/a")) == {"team": "sales", "cost center": "a/b"}
    g = s3.get_object(Bucket="bkt", Key="tag/a")
    assert g["TagCount"] == 2 and g["Body"].read() == b"abc", g.get("TagCount")
    before = s3.head_object(Bucket="bkt", Key="tag/a")
    s3.put_object_tagging(Bucket="bkt", Key="tag/a", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert ts(s3.get_object_tagging(Bucket="bkt", Key="tag/a")) == {"k": "v"}
    after = s3.head_object(Bucket="bkt", Key="tag/a")
    # Tagging changes neither the object nor its Last-Modified.
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    s3.delete_object_tagging(Bucket="bkt", Key="tag/a")
    assert s3.get_object_tagging(Bucket="bkt", Key="tag/a")["TagSet"] == []
    assert "TagCount" not in s3.get_object(Bucket="bkt", Key="tag/a")
    # An overwrite takes the new request's tags (none here).
    s3.put_object_tagging(Bucket="bkt", Key="tag/a", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    s3.put_object(Bucket="bkt", Key="tag/a", Body=b"new")
    assert s3.get_object_tagging(Bucket="bkt", Key="tag/a")["TagSet"] == []
    # S3's limits, each refused with InvalidTag, nothing changed.
    s3.put_object_tagging(Bucket="bkt", Key="tag/a", Tagging={"TagSet": [{"Key": "keep", "Value": "1"}]})
    eleven = {"TagSet": [{"Key": "k%d" % n, "Value": ""} for n in range(11)]}
    assert code_of(s3.put_object_tagging, Bucket="bkt", Key="tag/a", Tagging=eleven) == "BadRequest"
    for bad in ({"TagSet": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]},
                {"TagSet": [{"Key": "k" * 129, "Value": ""}]},
                {"TagSet": [{"Key": "k", "Value": "v" * 257}]},
                {"TagSet": [{"Key": "aws:reserved", "Value": "1"}]}):
        assert code_of(s3.put_object_tagging, Bucket="bkt", Key="tag/a", Tagging=bad) == "InvalidTag", bad
    assert ts(s3.get_object_tagging(Bucket="bkt", Key="tag/a")) == {"keep": "1"}
    assert code_of(s3.put_object, Bucket="bkt", Key="tag/b", Body=b"1", Tagging="a=1&a=2") == "InvalidArgument"
    assert code_of(s3.head_object, Bucket="bkt", Key="tag/b") == "404", "a refused PUT writes nothing"
    assert code_of(s3.get_object_tagging, Bucket="bkt", Key="tag/missing") == "NoSuchKey"
    assert code_of(s3.get_object_tagging, Bucket="bkt", Key="tag/a", VersionId="v1") == "NoSuchVersion"
    # Copies keep the source's tags (COPY) or take the request's (REPLACE).
    s3.copy_object(Bucket="bkt", Key="tag/c1", CopySource={"Bucket": "bkt", "Key": "tag/a"})
    assert ts(s3.get_object_tagging(Bucket="bkt", Key="tag/c1")) == {"keep": "1"}
    s3.copy_object(Bucket="bkt", Key="tag/c2", CopySource={"Bucket": "bkt", "Key": "tag/a"},
                   TaggingDirective="REPLACE", Tagging="x=y")
    assert ts(s3.get_object_tagging(Bucket="bkt", Key="tag/c2")) == {"x": "y"}
    # A multipart upload's tags land on the object it completes into.
    u = s3.create_multipart_upload(Bucket="bkt", Key="tag/mp", Tagging="stage=raw")["UploadId"]
    e = s3.upload_part(Bucket="bkt", Key="tag/mp", UploadId=u, PartNumber=1, Body=b"x" * 10)["ETag"]
    s3.complete_multipart_upload(Bucket="bkt", Key="tag/mp", UploadId=u,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    assert ts(s3.get_object_tagging(Bucket="bkt", Key="tag/mp")) == {"stage": "raw"}
    # A directory marker takes tags too.
    s3.put_object(Bucket="bkt", Key="tag/dir/", Body=b"", Tagging="kind=dir")
    assert ts(s3.get_object_tagging(Bucket="bkt", Key="tag/dir/")) == {"kind": "dir"}
    # ... replaced by a PUT without tags, and gone with the marker though objects stay below.
    s3.put_object(Bucket="bkt", Key="tag/dir/", Body=b"")
    assert s3.get_object_tagging(Bucket="bkt", Key="tag/dir/")["TagSet"] == []
    s3.put_object(Bucket="bkt", Key="tag/dir/", Body=b"", Tagging="kind=dir")
    s3.put_object(Bucket="bkt", Key="tag/dir/below", Body=b"1")
    s3.delete_object(Bucket="bkt", Key="tag/dir/")
    s3.put_object(Bucket="bkt", Key="tag/dir/", Body=b"")
    assert s3.get_object_tagging(Bucket="bkt", Key="tag/dir/")["TagSet"] == []
    s3.delete_object(Bucket="bkt", Key="tag/dir/below")
    # Buckets: none yet is NoSuchTagSet; up to 50; put replaces; delete removes.
    assert code_of(s3.get_bucket_tagging, Bucket="bkt") == "NoSuchTagSet"
    fifty = [{"Key": "k%02d" % n, "Value": str(n)} for n in range(50)]
    s3.put_bucket_tagging(Bucket="bkt", Tagging={"TagSet": fifty})
    assert len(s3.get_bucket_tagging(Bucket="bkt")["TagSet"]) == 50
    assert code_of(s3.put_bucket_tagging, Bucket="bkt",
                   Tagging={"TagSet": fifty + [{"Key": "one-more", "Value": ""}]}) == "BadRequest"
    s3.put_bucket_tagging(Bucket="bkt", Tagging={"TagSet": [{"Key": "env", "Value": "prod"}]})
    assert ts(s3.get_bucket_tagging(Bucket="bkt")) == {"env": "prod"}
    s3.delete_bucket_tagging(Bucket="bkt")
    assert code_of(s3.get_bucket_tagging, Bucket="bkt") == "NoSuchTagSet"
    assert code_of(s3.get_bucket_tagging, Bucket="nope-missing") == "NoSuchBucket"
    for k in ("tag/a", "tag/c1", "tag/c2", "tag/mp", "tag/dir/"):
        s3.delete_object(Bucket="bkt", Key=k)


@test
def cors():
    import requests
    verify = CA if CA else True
    assert code_of(s3.get_bucket_cors, Bucket="bkt") == "NoSuchCORSConfiguration"
    rules = [
        {"ID": "app", "AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
         "AllowedHeaders": ["content-*", "x-amz-*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
    ]
    s3.put_bucket_cors(Bucket="bkt", CORSConfiguration={"CORSRules": rules})
    got = s3.get_bucket_cors(Bucket="bkt")["CORSRules"]
    assert got[0]["AllowedOrigins"] == ["https://*.example.com"] and got[0]["MaxAgeSeconds"] == 600, got
    assert got[0]["ExposeHeaders"] == ["ETag"] and got[1]["AllowedMethods"] == ["GET"], got
    # Bad configurations are refused and change nothing.
    for bad in ([{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}],
                [{"AllowedOrigins": ["https://*.*.example.com"], "AllowedMethods": ["GET"]}],
                [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101):
        assert code_of(s3.put_bucket_cors, Bucket="bkt", CORSConfiguration={"CORSRules": bad}) == "InvalidRequest"
    assert len(s3.get_bucket_cors(Bucket="bkt")["CORSRules"]) == 2
    # A browser's preflight for a PUT from the app's origin, with its headers.
    s3.put_object(Bucket="bkt", Key="cors/page.html", Body=b"<html/>")
    url = "%s/bkt/cors/page.html" % ENDPOINT
    pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "PUT",
           "Access-Control-Request-Headers": "Content-Type, x-amz-date"}
    r = requests.options(url, headers=pre, verify=verify, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com", r.headers
    assert r.headers["Access-Control-Allow-Methods"] == "GET, PUT", r.headers
    assert r.headers["Access-Control-Allow-Headers"] == "content-type, x-amz-date", r.headers
    assert r.headers["Access-Control-Max-Age"] == "600" and r.headers["Access-Control-Expose-Headers"] == "ETag"
    # Another origin may only GET, without extra headers; a preflight nothing allows is 403.
    other = dict(pre, Origin="https://elsewhere.test")
    r = requests.options(url, headers=other, verify=verify, timeout=30)
    assert r.status_code == 403 and "<Code>AccessForbidden</Code>" in r.text, (r.status_code, r.text)
    r = requests.options(url, headers={"Origin": "https://elsewhere.test", "Access-Control-Request-Method": "GET"},
                         verify=verify, timeout=30)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*", (r.status_code, r.headers)
    r = requests.options(url, headers={"Access-Control-Request-Method": "GET"}, verify=verify, timeout=30)
    assert r.status_code == 400 and "<Code>BadRequest</Code>" in r.text, (r.status_code, r.text)
    # The actual request (a presigned GET, as a page would make it) carries the headers.
    get = s3.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "cors/page.html"}, ExpiresIn=60)
    r = requests.get(get, headers={"Origin": "https://app.example.com"}, verify=verify, timeout=30)
    assert r.status_code == 200 and r.content == b"<html/>", r.status_code
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com", r.headers
    assert r.headers["Access-Control-Expose-Headers"] == "ETag", r.headers
    r = requests.get(get, verify=verify, timeout=30)
    assert "Access-Control-Allow-Origin" not in r.headers, "no Origin, no CORS headers"
    # Without rules, preflights are refused.
    s3.delete_bucket_cors(Bucket="bkt")
    assert code_of(s3.get_bucket_cors, Bucket="bkt") == "NoSuchCORSConfiguration"
    r = requests.options(url, headers=pre, verify=verify, timeout=30)
    assert r.status_code == 403, r.status_code
    r = requests.options("%s/nope-missing/k" % ENDPOINT, headers=pre, verify=verify, timeout=30)
    assert r.status_code == 403, r.status_code
    s3.delete_object(Bucket="bkt", Key="cors/page.html")


@test
def details_clients_trip_on():
    # Expires is kept; aws-chunked (boto3's framing for checksums) is not stored as the
    # object's Content-Encoding.
    exp = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    s3.put_object(Bucket="bkt", Key="d/exp", Body=b"1", Expires=exp)
    h = s3.head_object(Bucket="bkt", Key="d/exp")
    assert h.get("Expires") == exp or h.get("ExpiresString") == "Wed, 02 Jan 2030 03:04:05 GMT", h
    s3.put_object(Bucket="bkt", Key="d/gz", Body=b"x" * 100, ContentEncoding="gzip", ChecksumAlgorithm="CRC32")
    assert s3.head_object(Bucket="bkt", Key="d/gz")["ContentEncoding"] == "gzip"
    # MaxKeys=0 lists nothing.
    r = s3.list_objects_v2(Bucket="bkt", Prefix="d/", MaxKeys=0)
    assert r["KeyCount"] == 0 and "Contents" not in r, r
    # Keys with characters URL encoding changes come back as they were (boto3 asks for
    # encoding-type=url and decodes).
    odd = ["d/a+b", "d/100%", "d/sp ace", "d/pct%20lit", "d/\u00fc", "d/q?x=1&y"]
    for k in odd:
        s3.put_object(Bucket="bkt", Key=k, Body=b"1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="d/")["Contents"]]
    assert set(odd) <= set(keys), keys
    keys = [o["Key"] for o in s3.list_objects(Bucket="bkt", Prefix="d/")["Contents"]]
    assert set(odd) <= set(keys), keys
    # GET and HEAD of one part of a multipart object; GetObjectAttributes.
    p1, p2 = data(5 * MiB, seed=40), data(3, seed=41)
    u = s3.create_multipart_upload(Bucket="bkt", Key="d/mp")["UploadId"]
    e1 = s3.upload_part(Bucket="bkt", Key="d/mp", UploadId=u, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket="bkt", Key="d/mp", UploadId=u, PartNumber=2, Body=p2)["ETag"]
    done = s3.complete_multipart_upload(Bucket="bkt", Key="d/mp", UploadId=u, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    h = s3.head_object(Bucket="bkt", Key="d/mp", PartNumber=1)
    assert h["ContentLength"] == 5 * MiB and h["PartsCount"] == 2, h
    g = s3.get_object(Bucket="bkt", Key="d/mp", PartNumber=2)
    assert g["Body"].read() == p2 and g["ContentRange"] == "bytes %d-%d/%d" % (5 * MiB, 5 * MiB + 2, 5 * MiB + 3), g
    assert code_of(s3.get_object, Bucket="bkt", Key="d/mp", PartNumber=3) == "InvalidPartNumber"
    assert s3.get_object(Bucket="bkt", Key="d/exp", PartNumber=1)["Body"].read() == b"1"
    assert code_of(s3.head_object, Bucket="bkt", Key="d/exp", PartNumber=2) in ("416", "InvalidPartNumber")
    a = s3.get_object_attributes(Bucket="bkt", Key="d/mp",
                                 ObjectAttributes=["ETag", "ObjectSize", "ObjectParts", "StorageClass"])
    # (AWS sends this ETag without quotes; s3s 0.14 quotes every ETag it writes in XML.)
    assert a["ETag"].strip('"') == done["ETag"].strip('"') and a["ObjectSize"] == 5 * MiB + 3, a
    assert a["StorageClass"] == "STANDARD" and a["ObjectParts"]["TotalPartsCount"] == 2, a
    a = s3.get_object_attributes(Bucket="bkt", Key="d/gz", ObjectAttributes=["Checksum", "ObjectSize"])
    assert a["ObjectSize"] == 100 and a["Checksum"]["ChecksumCRC32"], a
    assert code_of(s3.get_object_attributes, Bucket="bkt", Key="d/none", ObjectAttributes=["ETag"]) == "NoSuchKey"
    # ListBuckets pages, in name order ("bkt" before "bkt-2", though "/bkt-2/" sorts
    # first as a path).
    s3.create_bucket(Bucket="bkt-2")
    first = s3.list_buckets(MaxBuckets=1)
    assert len(first["Buckets"]) == 1 and first.get("ContinuationToken"), first
    rest = s3.list_buckets(MaxBuckets=1000, ContinuationToken=first["ContinuationToken"])
    names = [b["Name"] for b in first["Buckets"] + rest["Buckets"]]
    assert names == sorted(names) and names == [b["Name"] for b in s3.list_buckets()["Buckets"]], names
    assert "bkt-2" in names
    s3.delete_bucket(Bucket="bkt-2")
    for k in odd + ["d/exp", "d/gz", "d/mp"]:
        s3.delete_object(Bucket="bkt", Key=k)


@test
def multipart_upload_complete_abort_and_listings():
    parts = [data(5 * MiB, seed=10), data(5 * MiB, seed=11), data(1234, seed=12)]
    u = s3.create_multipart_upload(Bucket="bkt", Key="mp/obj", ContentType="application/x-mp", Metadata={"m": "1"})
    uid = u["UploadId"]
    etags = []
    for i, p in enumerate(parts):
        etags.append(s3.upload_part(Bucket="bkt", Key="mp/obj", UploadId=uid, PartNumber=i + 1, Body=p)["ETag"])
    # Re-uploading a part replaces it.
    etags[1] = s3.upload_part(Bucket="bkt", Key="mp/obj", UploadId=uid, PartNumber=2, Body=parts[1])["ETag"]
    lp = s3.list_parts(Bucket="bkt", Key="mp/obj", UploadId=uid)
    assert [p["PartNumber"] for p in lp["Parts"]] == [1, 2, 3] and lp["Parts"][2]["Size"] == 1234
    ups = s3.list_multipart_uploads(Bucket="bkt")["Uploads"]
    assert any(x["UploadId"] == uid and x["Key"] == "mp/obj" for x in ups), ups
    assert code_of(s3.head_object, Bucket="bkt", Key="mp/obj") == "404", "visible before completion"
    # Parts in the wrong order and unknown parts are refused.
    bad = {"Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]}
    assert code_of(s3.complete_multipart_upload, Bucket="bkt", Key="mp/obj", UploadId=uid, MultipartUpload=bad) == "InvalidPartOrder"
    bad = {"Parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 7, "ETag": etags[0]}]}
    assert code_of(s3.complete_multipart_upload, Bucket="bkt", Key="mp/obj", UploadId=uid, MultipartUpload=bad) == "InvalidPart"
    done = {"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]}
    r = s3.complete_multipart_upload(Bucket="bkt", Key="mp/obj", UploadId=uid, MultipartUpload=done)
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert r["ETag"] == '"%s-3"' % hashlib.md5(md5s).hexdigest(), r["ETag"]
    g = s3.get_object(Bucket="bkt", Key="mp/obj")
    assert g["Body"].read() == b"".join(parts)
    assert g["ContentType"] == "application/x-mp" and g["Metadata"] == {"m": "1"}
    assert s3.get_object(Bucket="bkt", Key="mp/obj", Range="bytes=%d-%d" % (5 * MiB - 2, 5 * MiB + 1))["Body"].read() == (parts[0] + parts[1])[5 * MiB - 2:5 * MiB + 2]
    assert code_of(s3.list_parts, Bucket="bkt", Key="mp/obj", UploadId=uid) == "NoSuchUpload"
    # A retried complete (its first answer lost) is answered again, as S3 does.
    r2 = s3.complete_multipart_upload(Bucket="bkt", Key="mp/obj", UploadId=uid, MultipartUpload=done)
    assert r2["ETag"] == r["ETag"], r2
    # Abort: nothing visible, the upload is gone.
    u2 = s3.create_multipart_upload(Bucket="bkt", Key="mp/aborted")["UploadId"]
    s3.upload_part(Bucket="bkt", Key="mp/aborted", UploadId=u2, PartNumber=1, Body=b"x" * 100)
    s3.abort_multipart_upload(Bucket="bkt", Key="mp/aborted", UploadId=u2)
    assert code_of(s3.head_object, Bucket="bkt", Key="mp/aborted") == "404"
    assert code_of(s3.upload_part, Bucket="bkt", Key="mp/aborted", UploadId=u2, PartNumber=2, Body=b"y") == "NoSuchUpload"
    assert code_of(s3.upload_part, Bucket="bkt", Key="mp/obj", UploadId="../../../x", PartNumber=1, Body=b"y") == "NoSuchUpload"
    # A too-small middle part.
    u3 = s3.create_multipart_upload(Bucket="bkt", Key="mp/small")["UploadId"]
    e1 = s3.upload_part(Bucket="bkt", Key="mp/small", UploadId=u3, PartNumber=1, Body=b"a" * 10)["ETag"]
    e2 = s3.upload_part(Bucket="bkt", Key="mp/small", UploadId=u3, PartNumber=2, Body=b"b" * 10)["ETag"]
    small = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}
    assert code_of(s3.complete_multipart_upload, Bucket="bkt", Key="mp/small", UploadId=u3, MultipartUpload=small) == "EntityTooSmall"
    # UploadPartCopy from an existing object, with a range, completes with If-None-Match.
    src = data(6 * MiB, seed=20)
    s3.put_object(Bucket="bkt", Key="mp/src", Body=src)
    u4 = s3.create_multipart_upload(Bucket="bkt", Key="mp/copied")["UploadId"]
    c1 = s3.upload_part_copy(Bucket="bkt", Key="mp/copied", UploadId=u4, PartNumber=1, CopySource={"Bucket": "bkt", "Key": "mp/src"}, CopySourceRange="bytes=0-%d" % (5 * MiB - 1))
    c2 = s3.upload_part_copy(Bucket="bkt", Key="mp/copied", UploadId=u4, PartNumber=2, CopySource={"Bucket": "bkt", "Key": "mp/src"}, CopySourceRange="bytes=%d-%d" % (5 * MiB, 6 * MiB - 1))
    done = {"Parts": [{"PartNumber": 1, "ETag": c1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": c2["CopyPartResult"]["ETag"]}]}
    s3.complete_multipart_upload(Bucket="bkt", Key="mp/copied", UploadId=u4, MultipartUpload=done, IfNoneMatch="*")
    assert s3.get_object(Bucket="bkt", Key="mp/copied")["Body"].read() == src


@test
def transfer_manager_multipart():
    # boto3's managed transfer (what `aws s3 cp` does): parallel parts, then a download.
    body = data(17 * MiB, seed=30)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "tarn-boto3-%d.bin" % os.getpid())
    with open(path, "wb") as f:
        f.write(body)
    cfg = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3.upload_file(path, "bkt", "tm/big.bin", Config=cfg)
    s3.download_file("bkt", "tm/big.bin", path + ".back", Config=cfg)
    with open(path + ".back", "rb") as f:
        assert f.read() == body
    os.remove(path)
    os.remove(path + ".back")


@test
def presigned_urls():
    s3.put_object(Bucket="bkt", Key="pre/obj", Body=b"presigned body")
    ctx = ssl.create_default_context(cafile=CA) if CA else None
    # boto3's default presigned URLs (SigV2 query) and SigV4 ones.
    v4 = client(s3={"addressing_style": "path"}, signature_version="s3v4")
    for c in (s3, v4):
        url = c.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "pre/obj"}, ExpiresIn=60)
        with urllib.request.urlopen(url, context=ctx, timeout=30) as r:
            assert r.read() == b"presigned body"
    too_long = v4.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "pre/obj"}, ExpiresIn=8 * 86400)
    try:
        urllib.request.urlopen(too_long, context=ctx, timeout=30)
        raise AssertionError("a presigned URL valid for 8 days was served")
    except urllib.error.HTTPError as e:
        assert e.code in (400, 403), e.code
    import requests
    put_url = v4.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "pre/put"}, ExpiresIn=60)
    r = requests.put(put_url, data=b"via presigned put", verify=CA if CA else True, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    assert s3.get_object(Bucket="bkt", Key="pre/put")["Body"].read() == b"via presigned put"
    expired = v4.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "pre/obj"}, ExpiresIn=1)
    time.sleep(2.5)  # the URL's own lifetime is what is tested, not a synchronisation
    try:
        urllib.request.urlopen(expired, context=ctx, timeout=30)
        raise AssertionError("an expired presigned URL was served")
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        assert e.code == 403 and "<Code>AccessDenied</Code>" in body and "expired" in body, body
        assert "<RequestId>" in body and e.headers.get("x-amz-request-id"), body


@test
def authentication_failures():
    assert code_of(client(sk=SK[:-1] + ("A" if SK[-1] != "A" else "B")).list_buckets) == "SignatureDoesNotMatch"
    assert code_of(client(ak="TKNOSUCHKEY000000000").list_buckets) == "InvalidAccessKeyId"
    # A client clock 20 minutes behind (botocore signs with awscrt when it is installed).
    import botocore.compat
    mods = [botocore.auth]
    try:
        import botocore.crt.auth
        mods.append(botocore.crt.auth)
    except ImportError:
        pass
    real = botocore.compat.get_current_datetime
    for m in mods:
        m.get_current_datetime = lambda remove_tzinfo=True: real(remove_tzinfo) - datetime.timedelta(minutes=20)
    try:
        assert code_of(client().list_buckets) == "RequestTimeTooSkewed"
    finally:
        for m in mods:
            m.get_current_datetime = real
    # Anonymous requests are refused.
    ctx = ssl.create_default_context(cafile=CA) if CA else None
    try:
        urllib.request.urlopen(ENDPOINT + "/bkt/src", context=ctx, timeout=30)
        raise AssertionError("an anonymous GET was served")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code


@test
def bad_keys_and_bodies():
    for key in ["a/../b", "a//b", "./x", "x/./y"]:
        assert code_of(s3.put_object, Bucket="bkt", Key=key, Body=b"1") == "InvalidArgument", key
    assert code_of(s3.put_object, Bucket="bkt", Key="k" * 1025, Body=b"1") == "KeyTooLongError"
    assert code_of(s3.put_object, Bucket="bkt", Key="dirmarker/", Body=b"not empty") == "InvalidArgument"
    # A key below an existing object cannot exist (keys are paths).
    s3.put_object(Bucket="bkt", Key="file", Body=b"1")
    assert code_of(s3.put_object, Bucket="bkt", Key="file/below", Body=b"1") == "InvalidArgument"
    # Malformed XML.
    u = s3.create_multipart_upload(Bucket="bkt", Key="xml")["UploadId"]
    import requests  # noqa: E402  (only here: a raw request botocore would not send)
    from botocore.awsrequest import AWSRequest
    body = b"<CompleteMultipartUpload><Part><PartNumber>1</Part"
    url = "%s/bkt/xml?uploadId=%s" % (ENDPOINT, u)
    req = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/xml"})
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    creds = botocore.credentials.Credentials(AK, SK)
    botocore.auth.SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    r = requests.post(url, data=body, headers=dict(req.headers), verify=CA if CA else True, timeout=30)
    assert r.status_code == 400 and "<Code>MalformedXML</Code>" in r.text, (r.status_code, r.text)
    s3.abort_multipart_upload(Bucket="bkt", Key="xml", UploadId=u)
    # Browser form uploads are refused before the body is read.
    r = requests.post(ENDPOINT + "/bkt", files={"file": ("f", b"x" * 1000)}, data={"key": "form"},
                      verify=CA if CA else True, timeout=30)
    assert r.status_code == 501 and "<Code>NotImplemented</Code>" in r.text, (r.status_code, r.text)
    # An operation Tarn does not implement says so, to any key (none is let through by
    # omission: gateway/src/s3/mod.rs, access_class).
    assert code_of(s3.get_bucket_policy, Bucket="bkt") == "NotImplemented"
    # A client that goes away mid-upload leaves nothing (tests/tests/s3.rs checks that its
    # staged bytes are removed too).
    v4 = client(s3={"addressing_style": "path"}, signature_version="s3v4")
    url = v4.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "gone"}, ExpiresIn=60)

    def body():
        yield b"x" * (2 << 20)
        raise IOError("the client went away")
    try:
        requests.put(url, data=body(), headers={"Content-Length": str(10 << 20)}, verify=CA if CA else True, timeout=30)
    except Exception:
        pass
    assert code_of(s3.head_object, Bucket="bkt", Key="gone") == "404"
    # Oversized request headers are refused, nothing written.
    # (The server answers 431 and closes; a client still sending may see only the close.)
    try:
        r = requests.put(ENDPOINT + "/bkt/huge-header", data=b"1", headers={"x-amz-meta-big": "v" * (200 << 10)},
                         verify=CA if CA else True, timeout=30)
        assert r.status_code in (400, 431), r.status_code
    except requests.exceptions.ConnectionError:
        pass
    assert code_of(s3.head_object, Bucket="bkt", Key="huge-header") == "404"


def main():
    failed = 0
    for t in TESTS:
        start = time.time()
        try:
            t()
            print("ok   %-50s %.2fs" % (t.__name__, time.time() - start), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (len(TESTS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
