"""Phases of tests/tests/s3.rs `gateway_killed_mid_upload_*`.

start:  creates a bucket and two multipart uploads, uploads parts 1 and 2 of the first
        and part 1 of the second, writes both upload ids to $TARN_STATE, then streams a
        large part 3 until the gateway dies under it (the test SIGKILLs it).
finish: against the restarted gateway: nothing is visible, ListParts shows parts 1
        and 2, completing with them gives their bytes; the second upload aborts cleanly.
"""
import hashlib
import json
import os
import sys

import boto3
from botocore.config import Config

MiB = 1 << 20
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["TARN_S3_ENDPOINT"],
    aws_access_key_id=os.environ["TARN_S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["TARN_S3_SECRET_KEY"],
    region_name="us-east-1",
    verify=os.environ["TARN_S3_CA"],
    config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, read_timeout=120),
)
state = os.environ["TARN_STATE"]


def part(n):
    return hashlib.sha256(b"%d" % n).digest() * (5 * MiB // 32)


if sys.argv[1] == "start":
    s3.create_bucket(Bucket="kill")
    u1 = s3.create_multipart_upload(Bucket="kill", Key="obj")["UploadId"]
    u2 = s3.create_multipart_upload(Bucket="kill", Key="other")["UploadId"]
    e1 = s3.upload_part(Bucket="kill", Key="obj", UploadId=u1, PartNumber=1, Body=part(1))["ETag"]
    e2 = s3.upload_part(Bucket="kill", Key="obj", UploadId=u1, PartNumber=2, Body=part(2))["ETag"]
    s3.upload_part(Bucket="kill", Key="other", UploadId=u2, PartNumber=1, Body=part(3))
    with open(state, "w") as f:
        json.dump({"u1": u1, "u2": u2, "e1": e1, "e2": e2}, f)
    print("parts uploaded", flush=True)

    class Endless:
        """A 4 GiB part body, produced as it is sent: the gateway dies long before the end."""

        def __init__(self):
            self.left = 4 << 30

        def read(self, n=-1):
            n = min(self.left, 1 * MiB if n is None or n < 0 else n)
            self.left -= n
            return b"x" * n

        def __len__(self):
            return 4 << 30

    try:
        s3.upload_part(Bucket="kill", Key="obj", UploadId=u1, PartNumber=3, Body=Endless(), ContentLength=4 << 30)
    except Exception as e:  # the gateway was killed: the connection broke
        print("part 3 failed as expected: %s" % type(e).__name__, flush=True)
        sys.exit(0)
    print("part 3 completed although the gateway was killed", flush=True)
    sys.exit(1)

if sys.argv[1] == "finish":
    st = json.load(open(state))
    try:
        s3.head_object(Bucket="kill", Key="obj")
        raise AssertionError("a half-uploaded object is visible")
    except s3.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "404", e.response
    parts = s3.list_parts(Bucket="kill", Key="obj", UploadId=st["u1"])["Parts"]
    assert [p["PartNumber"] for p in parts] == [1, 2], parts
    done = {"Parts": [{"PartNumber": 1, "ETag": st["e1"]}, {"PartNumber": 2, "ETag": st["e2"]}]}
    s3.complete_multipart_upload(Bucket="kill", Key="obj", UploadId=st["u1"], MultipartUpload=done)
    assert s3.get_object(Bucket="kill", Key="obj")["Body"].read() == part(1) + part(2)
    s3.abort_multipart_upload(Bucket="kill", Key="other", UploadId=st["u2"])
    assert s3.list_multipart_uploads(Bucket="kill").get("Uploads", []) == []
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="kill").get("Contents", [])]
    assert keys == ["obj"], keys
    print("finish: ok", flush=True)
