"""Access keys and grants (tests/tests/s3.rs `keys_grants_and_anonymous_reads`).

setup:   (admin key) buckets `shared` and `private`, one object in each.
check:   alice may read `shared` (granted read-only) but not bob's 0600 file in it, nor write it, may not touch
         `private`, sees only the buckets she may use, may create and use her own
         bucket, may not copy out of `private`; anonymous callers read `shared`
         (anonymous-read on) and nothing else; tags are read with a read grant and changed
         with a write grant, never by anonymous callers.
revoked: alice's deleted key is refused within the gateways' cache time.
"""
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

E = os.environ["TARN_S3_ENDPOINT"]
CA = os.environ["TARN_S3_CA"]


def client(ak, sk):
    return boto3.client("s3", endpoint_url=E, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1",
                        verify=CA, config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def code_of(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


admin = client(os.environ["TARN_S3_ACCESS_KEY"], os.environ["TARN_S3_SECRET_KEY"])
alice = client(os.environ["ALICE_AK"], os.environ["ALICE_SK"])
ctx = ssl.create_default_context(cafile=CA)


def anon(method, path, data=None):
    req = urllib.request.Request(E + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


phase = sys.argv[1]
if phase == "setup":
    admin.create_bucket(Bucket="shared")
    admin.create_bucket(Bucket="private")
    admin.create_bucket(Bucket="team")
    admin.put_object(Bucket="shared", Key="doc.txt", Body=b"shared doc")
    admin.put_object(Bucket="private", Key="secret.txt", Body=b"private doc")
elif phase == "check":
    assert alice.get_object(Bucket="shared", Key="doc.txt")["Body"].read() == b"shared doc"
    assert [o["Key"] for o in alice.list_objects_v2(Bucket="shared")["Contents"]] == ["bob/only.txt", "doc.txt"]
    assert code_of(alice.put_object, Bucket="shared", Key="x", Body=b"1") == "AccessDenied"
    assert code_of(alice.delete_object, Bucket="shared", Key="doc.txt") == "AccessDenied"
    assert code_of(alice.get_object, Bucket="private", Key="secret.txt") == "AccessDenied"
    # A file bob made with mode 0600 in a bucket alice may read: the file's permissions
    # hold for S3 as for `tarn fs` (alice is neither its owner nor the superuser).
    assert code_of(alice.get_object, Bucket="shared", Key="bob/only.txt") == "AccessDenied"
    assert code_of(alice.copy_object, Bucket="alice-own-2", Key="x",
                   CopySource={"Bucket": "shared", "Key": "bob/only.txt"}) in ("AccessDenied", "NoSuchBucket")
    assert admin.get_object(Bucket="shared", Key="bob/only.txt")["Body"].read() == b"bob only"
    assert code_of(alice.list_objects_v2, Bucket="private") == "AccessDenied"
    assert code_of(alice.put_object, Bucket="private", Key="x", Body=b"1") == "AccessDenied"
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["shared", "team"]
    # A read-write grant on a bucket she does not own: the bucket's grants decide (S3's
    # model), and what she writes is hers.
    alice.put_object(Bucket="team", Key="plan.txt", Body=b"alice's plan")
    mpu = alice.create_multipart_upload(Bucket="team", Key="big.bin")
    part = alice.upload_part(Bucket="team", Key="big.bin", UploadId=mpu["UploadId"], PartNumber=1, Body=b"x" * 1024)
    alice.complete_multipart_upload(Bucket="team", Key="big.bin", UploadId=mpu["UploadId"],
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    alice.put_object(Bucket="team", Key="dir/", Body=b"")
    alice.delete_object(Bucket="team", Key="dir/")
    assert alice.get_object(Bucket="team", Key="plan.txt")["Body"].read() == b"alice's plan"
    assert [o["Key"] for o in alice.list_objects_v2(Bucket="team")["Contents"]] == ["big.bin", "plan.txt"]
    alice.create_bucket(Bucket="alice-own")
    alice.put_object(Bucket="alice-own", Key="mine", Body=b"mine")
    assert alice.get_object(Bucket="alice-own", Key="mine")["Body"].read() == b"mine"
    assert sorted(b["Name"] for b in alice.list_buckets()["Buckets"]) == ["alice-own", "shared", "team"]
    assert code_of(alice.copy_object, Bucket="alice-own", Key="stolen",
                   CopySource={"Bucket": "private", "Key": "secret.txt"}) == "AccessDenied"
    alice.copy_object(Bucket="alice-own", Key="copied", CopySource={"Bucket": "shared", "Key": "doc.txt"})
    assert code_of(admin.head_object, Bucket="alice-own", Key="stolen") == "404"
    # The admin key sees and may do everything.
    assert admin.get_object(Bucket="alice-own", Key="mine")["Body"].read() == b"mine"
    # Anonymous callers: the public bucket only, and only to read.
    assert anon("GET", "/shared/doc.txt") == (200, b"shared doc")
    status, body = anon("GET", "/private/secret.txt")
    assert status == 403 and b"AccessDenied" in body, (status, body)
    status, _ = anon("PUT", "/shared/anon.txt", b"x")
    assert status == 403, status
    assert code_of(admin.head_object, Bucket="shared", Key="anon.txt") == "404"
    # Tags: read with a read grant, changed only with a write grant, never anonymously.
    one = {"TagSet": [{"Key": "a", "Value": "1"}]}
    admin.put_object_tagging(Bucket="shared", Key="doc.txt", Tagging=one)
    assert alice.get_object_tagging(Bucket="shared", Key="doc.txt")["TagSet"] == one["TagSet"]
    assert code_of(alice.put_object_tagging, Bucket="shared", Key="doc.txt", Tagging=one) == "AccessDenied"
    assert code_of(alice.delete_object_tagging, Bucket="shared", Key="doc.txt") == "AccessDenied"
    assert code_of(alice.put_bucket_tagging, Bucket="shared", Tagging=one) == "AccessDenied"
    assert code_of(alice.get_object_tagging, Bucket="private", Key="secret.txt") == "AccessDenied"
    status, body = anon("GET", "/shared/doc.txt?tagging")
    assert status == 403 and b"AccessDenied" in body, (status, body)
    alice.put_object_tagging(Bucket="team", Key="plan.txt", Tagging=one)
    alice.put_bucket_tagging(Bucket="team", Tagging=one)
    assert alice.get_bucket_tagging(Bucket="team")["TagSet"] == one["TagSet"]
elif phase == "revoked":
    deadline = time.time() + 30
    while code_of(alice.list_buckets) != "InvalidAccessKeyId":
        assert time.time() < deadline, "a deleted key still works after 30 s"
        time.sleep(0.2)
print("%s: ok" % phase)
