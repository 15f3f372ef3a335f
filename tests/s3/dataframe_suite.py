"""Dataframe libraries against the gateway: pyarrow's S3FileSystem writing and reading a
partitioned parquet dataset, polars read_parquet/write_parquet on s3://, and s3fs.

Run by tests/tests/s3.rs (endpoint, keys and CA bundle in the environment).
"""
import os
import sys
import traceback

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ENDPOINT = os.environ["TARN_S3_ENDPOINT"]
AK = os.environ["TARN_S3_ACCESS_KEY"]
SK = os.environ["TARN_S3_SECRET_KEY"]
CA = os.environ["TARN_S3_CA"]
scheme, host = ENDPOINT.split("://")

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def table(n=10_000):
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "region": pa.array(["north", "south", "east", "west"][i % 4] for i in range(n)),
        "amount": pa.array([i * 0.25 for i in range(n)]),
    })


@test
def pyarrow_partitioned_dataset():
    fs = pafs.S3FileSystem(access_key=AK, secret_key=SK, region="us-east-1", scheme=scheme,
                           endpoint_override=host, tls_ca_file_path=CA, allow_bucket_creation=True)
    fs.create_dir("frames")
    t = table()
    ds.write_dataset(t, "frames/sales", format="parquet", filesystem=fs, partitioning=["region"],
                     partitioning_flavor="hive", existing_data_behavior="overwrite_or_ignore")
    infos = fs.get_file_info(pafs.FileSelector("frames/sales", recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    assert len(files) == 4 and all(f.endswith(".parquet") for f in files), files
    back = ds.dataset("frames/sales", format="parquet", filesystem=fs, partitioning="hive").to_table()
    assert back.num_rows == t.num_rows
    assert sorted(back.column("id").to_pylist()) == list(range(t.num_rows))
    north = ds.dataset("frames/sales", format="parquet", filesystem=fs, partitioning="hive").to_table(
        filter=ds.field("region") == "north")
    assert north.num_rows == t.num_rows // 4
    # A single file with row groups read by range.
    pq.write_table(t, "frames/one.parquet", filesystem=fs, row_group_size=1000)
    f = pq.ParquetFile("frames/one.parquet", filesystem=fs)
    assert f.metadata.num_row_groups == 10
    assert f.read_row_group(7).column("id").to_pylist() == list(range(7000, 8000))


@test
def polars_read_and_write_parquet():
    import polars as pl
    opts = {"aws_endpoint_url": ENDPOINT, "aws_access_key_id": AK, "aws_secret_access_key": SK,
            "aws_region": "us-east-1"}
    df = pl.DataFrame({"k": list(range(5000)), "v": [str(i) for i in range(5000)]})
    df.write_parquet("s3://frames/polars/out.parquet", storage_options=opts)
    back = pl.read_parquet("s3://frames/polars/out.parquet", storage_options=opts)
    assert back.equals(df)
    lazy = pl.scan_parquet("s3://frames/sales/**/*.parquet", storage_options=opts, hive_partitioning=True)
    assert lazy.select(pl.len()).collect().item() == 10_000


@test
def s3fs_files():
    import s3fs
    fs = s3fs.S3FileSystem(key=AK, secret=SK, endpoint_url=ENDPOINT, client_kwargs={"verify": CA, "region_name": "us-east-1"})
    with fs.open("frames/s3fs/a.txt", "wb") as f:
        f.write(b"hello from s3fs\n" * 1000)
    assert fs.cat("frames/s3fs/a.txt") == b"hello from s3fs\n" * 1000
    assert fs.cat_file("frames/s3fs/a.txt", start=6, end=10) == b"from"
    assert "frames/s3fs/a.txt" in fs.ls("frames/s3fs")
    assert fs.info("frames/s3fs/a.txt")["size"] == 16000
    fs.rm("frames/s3fs/a.txt")
    assert not fs.exists("frames/s3fs/a.txt")
    df = pq.read_table("frames/one.parquet", filesystem=fs)
    assert df.num_rows == 10_000


def main():
    failed = 0
    for t in TESTS:
        try:
            t()
            print("ok   %s" % t.__name__, flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % t.__name__, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (len(TESTS) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    # Shut Arrow's S3 client down and leave without the interpreter's teardown: left to
    # the exit handlers, the AWS C++ SDK's threads abort the process now and then
    # ("terminate called without an active exception") after every test passed.
    pafs.finalize_s3()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
