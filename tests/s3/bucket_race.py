"""CreateBucket and directory markers are one namespace operation
(tests/tests/s3.rs `create_bucket_races_have_one_winner`).

race:   in each round, alice's and bob's keys (several clients each, released together by a
        barrier) create the same bucket: exactly one call succeeds; every other call of the
        winner's user answers BucketAlreadyOwnedByYou, every call of the other user
        BucketAlreadyExists (both 409). Prints the winners, one line each (the test checks the
        owners and grants in the namespace).
owners: a bucket of alice's answers BucketAlreadyExists to bob and BucketAlreadyOwnedByYou
        to alice, and bob's refused attempt gave him nothing in it; bob's directory marker
        over alice's directory `marks/d` (bob may write in `marks`) succeeds without taking it over.
"""
import os
import threading

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

E = os.environ["TARN_S3_ENDPOINT"]
CA = os.environ["TARN_S3_CA"]
ROUNDS = 5
PER_USER = 6


def client(user):
    ak, sk = os.environ[user.upper() + "_AK"], os.environ[user.upper() + "_SK"]
    return boto3.client("s3", endpoint_url=E, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1",
                        verify=CA, config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def answer(fn, **kw):
    """'OK', or the error code and HTTP status."""
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return "OK", 200


winners = {}
for r in range(ROUNDS):
    name = f"race-{r}"
    # Clients (and their sessions) are made before the race: only the calls run together.
    contenders = [(u, client(u)) for u in ("alice", "bob") for _ in range(PER_USER)]
    barrier = threading.Barrier(len(contenders))
    results = []
    lock = threading.Lock()

    def attempt(user, c):
        barrier.wait(timeout=60)
        got = answer(c.create_bucket, Bucket=name)
        with lock:
            results.append((user, got))

    threads = [threading.Thread(target=attempt, args=uc) for uc in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), f"{name}: a CreateBucket call did not return"
    ok = [u for u, got in results if got[0] == "OK"]
    assert len(ok) == 1, f"{name}: {len(ok)} successful CreateBucket calls: {sorted(results)}"
    winner = ok[0]
    for user, got in results:
        if got[0] == "OK":
            continue
        want = "BucketAlreadyOwnedByYou" if user == winner else "BucketAlreadyExists"
        assert got == (want, 409), f"{name}: {user} got {got}, expected {want} (winner {winner}): {sorted(results)}"
    winners[name] = winner

alice, bob = client("alice"), client("bob")
assert answer(alice.create_bucket, Bucket="alice-only") == ("OK", 200)
assert answer(bob.create_bucket, Bucket="alice-only") == ("BucketAlreadyExists", 409)
assert answer(alice.create_bucket, Bucket="alice-only") == ("BucketAlreadyOwnedByYou", 409)
# Bob's refused CreateBucket gave him no grant in alice's bucket.
assert answer(bob.put_object, Bucket="alice-only", Key="x", Body=b"1")[0] == "AccessDenied"
assert answer(bob.list_objects_v2, Bucket="alice-only")[0] == "AccessDenied"
alice.put_object(Bucket="alice-only", Key="mine", Body=b"1")
# A directory marker over an existing directory: the PUT succeeds (S3 semantics), and the
# directory stays its owner's (the test checks the owner of /marks/d).
assert answer(bob.put_object, Bucket="marks", Key="d/", Body=b"") == ("OK", 200)
assert "d/" in [o["Key"] for o in bob.list_objects_v2(Bucket="marks", Prefix="d/", Delimiter="/").get("Contents", [])]
# A new marker (and the directory above it) is the writer's.
assert answer(bob.put_object, Bucket="marks", Key="new/sub/", Body=b"") == ("OK", 200)
for name, user in winners.items():
    print(f"winner {name} {user}")
print("race: ok")
