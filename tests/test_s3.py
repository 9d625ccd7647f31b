"""The S3-compatible endpoint with real clients: boto3 and the AWS CLI, against a real host."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import boto3
import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import TEST_APPS, copy_app, cut_short, serve_apps

AWS = str(Path(sys.executable).parent / "aws")


@pytest.fixture(scope="module")
def host(tmp_path_factory, cache_dir):
    yield from serve_apps(tmp_path_factory, cache_dir, "s3", TEST_APPS / "files")


def new_key(cart, server, app="files") -> dict:
    key = json.loads(cart.cli("keys", "create", app, "--json").stdout)
    key["endpoint"] = f"{server.base}/{app}/storage/v1/s3"
    return key


def client(key, secret=None, **config):
    return boto3.client(
        "s3", endpoint_url=key["endpoint"], aws_access_key_id=key["accessKeyId"],
        aws_secret_access_key=secret or key["secretAccessKey"], region_name="eu-central-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}, **config),
    )


def code(call) -> str:
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def s3(host):
    cart, server = host
    return client(new_key(cart, server))


def test_a_new_key_names_the_endpoint_the_host_serves_on(host):
    cart, server = host
    key = json.loads(cart.cli("keys", "create", "files", "--json").stdout)
    assert key["endpoint"] == f"{server.base}/files/storage/v1/s3"  # before: port 8080 whatever up was given
    assert client(key).list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_keys_cli(host):
    cart, server = host
    key = new_key(cart, server)
    assert key["accessKeyId"] in cart.cli("keys", "list", "files").stdout
    assert key["endpoint"].endswith("/files/storage/v1/s3")
    c = client(key)
    c.list_buckets()
    cart.cli("keys", "revoke", "files", key["accessKeyId"])
    assert code(c.list_buckets) == "InvalidAccessKeyId"
    assert cart.cli("keys", "revoke", "files", key["accessKeyId"], check=False).returncode == 1


def test_buckets(s3):
    s3.create_bucket(Bucket="b-one")
    assert code(lambda: s3.create_bucket(Bucket="b-one")) == "BucketAlreadyOwnedByYou"
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert {"avatars", "docs", "b-one"} <= set(names)
    s3.head_bucket(Bucket="b-one")
    assert code(lambda: s3.head_bucket(Bucket="b-none")) == "404"
    s3.put_object(Bucket="b-one", Key="k", Body=b"x")
    assert code(lambda: s3.delete_bucket(Bucket="b-one")) == "BucketNotEmpty"
    s3.delete_object(Bucket="b-one", Key="k")
    s3.delete_bucket(Bucket="b-one")
    assert code(lambda: s3.list_objects_v2(Bucket="b-one")) == "NoSuchBucket"
    assert code(lambda: s3.create_bucket(Bucket="Bad_Name")) == "InvalidBucketName"


def test_buckets_made_in_js_keep_their_rules_over_s3(host, s3):
    _, server = host
    made = server.request("POST", "/files/buckets/createBucket/s3-rules",
                          json={"fileSizeLimit": 10, "allowedMimeTypes": ["text/plain"]}).json()
    assert made["error"] is None
    assert "s3-rules" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert code(lambda: s3.create_bucket(Bucket="s3-rules")) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket="s3-rules", Key="ok", Body=b"0123456789", ContentType="text/plain")
    assert code(lambda: s3.put_object(Bucket="s3-rules", Key="big", Body=b"x" * 11, ContentType="text/plain")) == "EntityTooLarge"
    assert error(lambda: s3.put_object(Bucket="s3-rules", Key="img", Body=b"x", ContentType="image/png"))[0] == 415
    assert error(lambda: s3.create_multipart_upload(Bucket="s3-rules", Key="m", ContentType="image/png"))[0] == 415
    assert code(lambda: s3.delete_bucket(Bucket="s3-rules")) == "BucketNotEmpty"
    assert server.request("POST", "/files/buckets/emptyBucket/s3-rules").json()["error"] is None
    s3.delete_bucket(Bucket="s3-rules")
    assert server.request("POST", "/files/buckets/getBucket/s3-rules").json()["error"]["error"] == "NoSuchBucket"


def test_cache_control_is_kept_and_served(host, s3):
    _, server = host
    s3.put_object(Bucket="docs", Key="cc/a", Body=b"a", CacheControl="public, max-age=30")
    assert s3.get_object(Bucket="docs", Key="cc/a")["CacheControl"] == "public, max-age=30"
    s3.put_object(Bucket="docs", Key="cc/none", Body=b"n")
    assert "CacheControl" not in s3.head_object(Bucket="docs", Key="cc/none")
    s3.copy_object(Bucket="docs", Key="cc/copied", CopySource={"Bucket": "docs", "Key": "cc/a"})
    assert s3.head_object(Bucket="docs", Key="cc/copied")["CacheControl"] == "public, max-age=30"
    s3.copy_object(Bucket="docs", Key="cc/a", CopySource={"Bucket": "docs", "Key": "cc/a"}, MetadataDirective="REPLACE",
                   CacheControl="no-store")
    assert s3.head_object(Bucket="docs", Key="cc/a")["CacheControl"] == "no-store"
    up = s3.create_multipart_upload(Bucket="docs", Key="cc/mp", CacheControl="max-age=7")["UploadId"]
    etag = s3.upload_part(Bucket="docs", Key="cc/mp", UploadId=up, PartNumber=1, Body=b"mp")["ETag"]
    s3.complete_multipart_upload(Bucket="docs", Key="cc/mp", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    signed = server.get("/files/sign/docs/cc/mp").json()["data"]["signedUrl"]
    assert server.get(signed).headers["cache-control"] == "max-age=7"  # the JS side serves what S3 stored


def test_objects_and_conditionals(s3):
    data = os.urandom(1_300_000)
    put = s3.put_object(Bucket="docs", Key="dir/o.bin", Body=data, ContentType="x/y", Metadata={"who": "me"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="docs", Key="dir/o.bin")
    assert got["Body"].read() == data and got["ContentType"] == "x/y" and got["Metadata"] == {"who": "me"}
    assert s3.get_object(Bucket="docs", Key="dir/o.bin", Range="bytes=100-199")["Body"].read() == data[100:200]
    assert s3.head_object(Bucket="docs", Key="dir/o.bin")["ContentLength"] == len(data)
    assert code(lambda: s3.get_object(Bucket="docs", Key="dir/o.bin", IfNoneMatch=put["ETag"])) == "304"
    assert code(lambda: s3.get_object(Bucket="docs", Key="missing")) == "NoSuchKey"
    assert code(lambda: s3.head_object(Bucket="docs", Key="missing")) == "404"
    s3.copy_object(Bucket="avatars", Key="c.bin", CopySource={"Bucket": "docs", "Key": "dir/o.bin"})
    assert s3.get_object(Bucket="avatars", Key="c.bin")["Body"].read() == data
    s3.delete_object(Bucket="avatars", Key="c.bin")
    s3.delete_object(Bucket="avatars", Key="c.bin")  # deleting what is gone is fine, as in S3


def test_conditional_writes_and_reads(s3):
    s3.put_object(Bucket="docs", Key="cond/new", Body=b"first", IfNoneMatch="*")
    assert error(lambda: s3.put_object(Bucket="docs", Key="cond/new", Body=b"again", IfNoneMatch="*"))[:2] == (412, "PreconditionFailed")
    assert s3.get_object(Bucket="docs", Key="cond/new")["Body"].read() == b"first"
    up = s3.create_multipart_upload(Bucket="docs", Key="cond/new")["UploadId"]
    etag = s3.upload_part(Bucket="docs", Key="cond/new", UploadId=up, PartNumber=1, Body=b"mp")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    assert code(lambda: s3.complete_multipart_upload(Bucket="docs", Key="cond/new", UploadId=up, MultipartUpload=parts,
                                                     IfNoneMatch="*")) == "PreconditionFailed"
    assert s3.get_object(Bucket="docs", Key="cond/new")["Body"].read() == b"first"
    head = s3.head_object(Bucket="docs", Key="cond/new")
    assert s3.get_object(Bucket="docs", Key="cond/new", IfMatch=head["ETag"])["Body"].read() == b"first"
    assert code(lambda: s3.get_object(Bucket="docs", Key="cond/new", IfMatch='"0123"')) == "PreconditionFailed"
    assert code(lambda: s3.head_object(Bucket="docs", Key="cond/new", IfMatch='"0123"')) == "412"
    long_ago = datetime(2001, 1, 1, tzinfo=timezone.utc)
    assert code(lambda: s3.get_object(Bucket="docs", Key="cond/new", IfUnmodifiedSince=long_ago)) == "PreconditionFailed"
    assert code(lambda: s3.head_object(Bucket="docs", Key="cond/new", IfUnmodifiedSince=long_ago)) == "412"
    assert s3.get_object(Bucket="docs", Key="cond/new", IfUnmodifiedSince=head["LastModified"])["Body"].read() == b"first"
    # If-Match is judged before If-None-Match (RFC 9110): a failed one is 412, not 304.
    assert code(lambda: s3.get_object(Bucket="docs", Key="cond/new", IfMatch='"0123"', IfNoneMatch=head["ETag"])) == "PreconditionFailed"


def test_conditional_writes_copies_and_deletes_hold_or_change_nothing(s3):
    etag = s3.put_object(Bucket="docs", Key="ifm/a", Body=b"one")["ETag"]
    s3.put_object(Bucket="docs", Key="ifm/src", Body=b"source", ContentType="text/x-src")
    # before: each of these was written (or deleted) whatever its condition
    assert error(lambda: s3.put_object(Bucket="docs", Key="ifm/a", Body=b"two", IfMatch='"deadbeef"'))[:2] == (412, "PreconditionFailed")
    assert code(lambda: s3.put_object(Bucket="docs", Key="ifm/none", Body=b"x", IfMatch=etag)) == "NoSuchKey"
    assert code(lambda: s3.copy_object(Bucket="docs", Key="ifm/a", CopySource="docs/ifm/src", IfNoneMatch="*")) == "PreconditionFailed"
    assert code(lambda: s3.copy_object(Bucket="docs", Key="ifm/a", CopySource="docs/ifm/src", IfMatch='"deadbeef"')) == "PreconditionFailed"
    src_etag = s3.head_object(Bucket="docs", Key="ifm/src")["ETag"]
    for condition in ({"CopySourceIfMatch": '"deadbeef"'}, {"CopySourceIfNoneMatch": src_etag},
                      {"CopySourceIfUnmodifiedSince": datetime(2001, 1, 1, tzinfo=timezone.utc)},
                      {"CopySourceIfModifiedSince": datetime.now(timezone.utc)}):  # a later date is invalid: ignored
        assert code(lambda: s3.copy_object(Bucket="docs", Key="ifm/a", CopySource="docs/ifm/src", **condition)) == "PreconditionFailed", condition
    assert code(lambda: s3.delete_object(Bucket="docs", Key="ifm/a", IfMatch='"deadbeef"')) == "PreconditionFailed"
    got = s3.get_object(Bucket="docs", Key="ifm/a")
    assert got["Body"].read() == b"one" and got["ETag"] == etag and got["ContentType"] != "text/x-src"
    # Conditions that hold let the write through.
    s3.copy_object(Bucket="docs", Key="ifm/a", CopySource="docs/ifm/src", IfMatch=etag, CopySourceIfMatch=src_etag)
    assert s3.get_object(Bucket="docs", Key="ifm/a")["Body"].read() == b"source"
    etag = s3.put_object(Bucket="docs", Key="ifm/a", Body=b"three", IfMatch=s3.head_object(Bucket="docs", Key="ifm/a")["ETag"])["ETag"]
    s3.delete_object(Bucket="docs", Key="ifm/a", IfMatch=etag)
    assert code(lambda: s3.head_object(Bucket="docs", Key="ifm/a")) == "404"
    s3.delete_object(Bucket="docs", Key="ifm/a", IfMatch=etag)  # nothing there: no error, as S3 has it
    s3.put_object(Bucket="docs", Key="ifm/b", Body=b"kept")
    assert code(lambda: s3.delete_object(Bucket="docs", Key="ifm/b", IfMatchSize=1)) == "NotImplemented"
    assert s3.get_object(Bucket="docs", Key="ifm/b")["Body"].read() == b"kept"


def test_representation_headers_are_kept_and_response_overrides_honoured(s3):
    stored = {"ContentDisposition": 'attachment; filename="r.txt"', "ContentEncoding": "gzip",
              "ContentLanguage": "de", "Expires": datetime(2030, 1, 1, tzinfo=timezone.utc)}
    s3.put_object(Bucket="docs", Key="rep/a", Body=b"zipped", ContentType="text/plain", **stored)
    def kept(key):
        head = s3.head_object(Bucket="docs", Key=key)
        return {k: head.get(k) for k in stored}
    assert kept("rep/a") == stored  # before: dropped, so gzipped bytes went out unlabelled
    s3.copy_object(Bucket="docs", Key="rep/copy", CopySource="docs/rep/a")
    assert kept("rep/copy") == stored
    s3.copy_object(Bucket="docs", Key="rep/copy", CopySource="docs/rep/a", MetadataDirective="REPLACE", ContentLanguage="fr")
    assert kept("rep/copy") == {"ContentDisposition": None, "ContentEncoding": None, "ContentLanguage": "fr", "Expires": None}
    up = s3.create_multipart_upload(Bucket="docs", Key="rep/mp", ContentEncoding="br")["UploadId"]
    etag = s3.upload_part(Bucket="docs", Key="rep/mp", UploadId=up, PartNumber=1, Body=b"mp")["ETag"]
    s3.complete_multipart_upload(Bucket="docs", Key="rep/mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.head_object(Bucket="docs", Key="rep/mp")["ContentEncoding"] == "br"
    got = s3.get_object(Bucket="docs", Key="rep/a", ResponseContentType="application/x-over",
                        ResponseContentDisposition="inline", ResponseCacheControl="no-store")
    assert (got["ContentType"], got["ContentDisposition"], got["CacheControl"], got["ContentEncoding"]) == (
        "application/x-over", "inline", "no-store", "gzip")  # before: the overrides were ignored
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "docs", "Key": "rep/copy", "ResponseContentType": "image/png"})
    assert httpx.get(url).headers["content-type"] == "image/png"
    assert code(lambda: s3.get_object(Bucket="docs", Key="rep/a", ResponseContentLanguage="a\nb")) == "InvalidArgument"


def test_smaller_s3_answers_as_s3_gives_them(s3):
    assert code(lambda: s3.put_object(Bucket="docs", Key="small/md5", Body=b"x", ContentMD5="not base64!")) == "InvalidDigest"
    for key in ("small/a", "small/b"):
        s3.put_object(Bucket="docs", Key=key, Body=b"x")
    listed = s3.list_objects_v2(Bucket="docs", Prefix="small/", StartAfter="small/a", FetchOwner=True)
    assert listed["StartAfter"] == "small/a" and [o["Key"] for o in listed["Contents"]] == ["small/b"]
    assert listed["Contents"][0]["Owner"]["ID"] == "files"
    assert "Owner" not in s3.list_objects_v2(Bucket="docs", Prefix="small/")["Contents"][0]
    assert s3.get_object(Bucket="docs", Key="small/a", PartNumber=1)["Body"].read() == b"x"
    assert code(lambda: s3.get_object(Bucket="docs", Key="small/a", PartNumber=2)) == "InvalidPartNumber"
    up = s3.create_multipart_upload(Bucket="docs", Key="small/mp")["UploadId"]
    etag = s3.upload_part(Bucket="docs", Key="small/mp", UploadId=up, PartNumber=1, Body=b"mp")["ETag"]
    s3.complete_multipart_upload(Bucket="docs", Key="small/mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    # before: the whole object, as if it were part 1
    assert code(lambda: s3.get_object(Bucket="docs", Key="small/mp", PartNumber=1)) == "NotImplemented"


def error(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as e:
        call()
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"].get("Message", "")


def test_copy_object_metadata_directive(s3):
    s3.put_object(Bucket="docs", Key="meta/src", Body=b"0123456789", ContentType="text/plain", Metadata={"a": "1"})
    s3.copy_object(Bucket="docs", Key="meta/copied", CopySource={"Bucket": "docs", "Key": "meta/src"},
                   ContentType="ignored/x", Metadata={"ignored": "y"})  # COPY (the default) keeps the source's
    head = s3.head_object(Bucket="docs", Key="meta/copied")
    assert (head["ContentType"], head["Metadata"]) == ("text/plain", {"a": "1"})
    s3.copy_object(Bucket="docs", Key="meta/replaced", CopySource={"Bucket": "docs", "Key": "meta/src"},
                   MetadataDirective="REPLACE", ContentType="image/png", Metadata={"b": "2"})
    head = s3.head_object(Bucket="docs", Key="meta/replaced")
    assert (head["ContentType"], head["Metadata"]) == ("image/png", {"b": "2"})
    assert s3.get_object(Bucket="docs", Key="meta/replaced")["Body"].read() == b"0123456789"
    assert s3.head_object(Bucket="docs", Key="meta/src")["Metadata"] == {"a": "1"}

    status, code_, message = error(lambda: s3.copy_object(
        Bucket="docs", Key="meta/src", CopySource={"Bucket": "docs", "Key": "meta/src"}))
    assert (status, code_) == (400, "InvalidRequest") and "copy an object to itself" in message
    etag = s3.head_object(Bucket="docs", Key="meta/src")["ETag"]
    s3.copy_object(Bucket="docs", Key="meta/src", CopySource={"Bucket": "docs", "Key": "meta/src"},
                   MetadataDirective="REPLACE", ContentType="x/updated", Metadata={"c": "3"})
    head = s3.head_object(Bucket="docs", Key="meta/src")
    assert (head["ContentType"], head["Metadata"], head["ETag"]) == ("x/updated", {"c": "3"}, etag)
    assert s3.get_object(Bucket="docs", Key="meta/src")["Body"].read() == b"0123456789"
    # S3 overwrites an existing destination (no Duplicate here, unlike the JS API without upsert).
    s3.copy_object(Bucket="docs", Key="meta/replaced", CopySource={"Bucket": "docs", "Key": "meta/copied"})
    assert s3.head_object(Bucket="docs", Key="meta/replaced")["ContentType"] == "text/plain"


def test_errors_are_s3_xml(host, s3):
    _, server = host
    s3.put_object(Bucket="docs", Key="ten", Body=b"0123456789")
    status, code_, _ = error(lambda: s3.get_object(Bucket="docs", Key="ten", Range="bytes=50-60"))
    assert (status, code_) == (416, "InvalidRange")
    assert s3.get_object(Bucket="docs", Key="ten", Range="bytes=5-60")["Body"].read() == b"56789"
    for key in ("../escape", "a/../b", "a/./b", "nul\x00", "c1\x85", "c1\x9f"):
        assert error(lambda: s3.put_object(Bucket="docs", Key=key, Body=b"x"))[:2] == (400, "InvalidArgument"), key
        assert error(lambda: s3.get_object(Bucket="docs", Key=key))[:2] == (400, "InvalidArgument"), key
    raw = httpx.get(f"{server.base}/files/storage/v1/s3/docs/a/%2e%2e/b")
    assert raw.status_code == 400 and b"<Code>InvalidArgument</Code>" in raw.content
    # Elsewhere the server still refuses such paths itself.
    other = httpx.get(f"{server.base}/files/x/%2e%2e/y")
    assert other.status_code == 400 and other.headers["content-type"].startswith("application/json")


def test_sub_resources_not_implemented_leave_objects_alone(s3):
    """Tagging, ACLs, policies and versions are operations of their own: taken for a plain PUT or
    DELETE they replaced or deleted the object."""
    s3.put_object(Bucket="docs", Key="tagged", Body=b"keep me")
    calls = [
        lambda: s3.put_object_tagging(Bucket="docs", Key="tagged", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
        lambda: s3.delete_object_tagging(Bucket="docs", Key="tagged"),
        lambda: s3.get_object_tagging(Bucket="docs", Key="tagged"),
        lambda: s3.put_object_acl(Bucket="docs", Key="tagged", ACL="public-read"),
        lambda: s3.put_bucket_policy(Bucket="docs", Policy="{}"),
        lambda: s3.get_bucket_versioning(Bucket="docs"),
        lambda: s3.list_object_versions(Bucket="docs"),
    ]
    for call in calls:
        assert error(call)[:2] == (501, "NotImplemented")
    assert s3.get_object(Bucket="docs", Key="tagged")["Body"].read() == b"keep me"


def test_error_xml_parses_whatever_the_key(s3):
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "docs", "Key": "a\x01b"}, ExpiresIn=60)
    refused = httpx.get(url)
    assert refused.status_code == 400
    root = ElementTree.fromstring(refused.content)
    assert root.findtext("Code") == "InvalidArgument" and root.findtext("Resource") == "/docs/a\ufffdb"


def test_keys_are_keys_not_paths(host, s3):
    # What the storage key rules accept, S3 accepts too: a backslash, a literal %2e%2e segment (not '..').
    _, server = host
    for key in ("bs/back\\slash", "a/%2e%2e/b"):
        s3.put_object(Bucket="docs", Key=key, Body=key.encode())
        assert s3.get_object(Bucket="docs", Key=key)["Body"].read() == key.encode()
        assert s3.head_object(Bucket="docs", Key=key)["ContentLength"] == len(key)
        s3.copy_object(Bucket="avatars", Key=key, CopySource={"Bucket": "docs", "Key": key})
        assert s3.get_object(Bucket="avatars", Key=key)["Body"].read() == key.encode()
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="docs", Prefix=key)["Contents"]] == [key]
        listed = server.get("/files/list/docs", params={"path": key.rpartition("/")[0]}).json()["data"]
        assert key.rpartition("/")[2] in [o["name"] for o in listed]


def test_the_js_api_and_s3_share_one_namespace(host, s3):
    _, server = host
    s3.put_object(Bucket="docs", Key="shared/from-s3.txt", Body=b"via s3")
    assert server.get("/files/get/docs/shared/from-s3.txt").content == b"via s3"
    assert server.request("PUT", "/files/pipe/docs/shared/from-js.txt", content=b"via js").json()["error"] is None
    assert s3.get_object(Bucket="docs", Key="shared/from-js.txt")["Body"].read() == b"via js"
    # An object's own metadata may use any name: listed, it stays beside the object's fields, not over them.
    s3.put_object(Bucket="docs", Key="shared/meta.txt", Body=b"m", Metadata={"size": "999", "mimetype": "evil/x"})
    [entry] = server.get("/files/list/docs?path=shared&search=meta").json()["data"]
    assert entry["metadata"]["size"] == 1 and entry["metadata"]["mimetype"] != "evil/x"
    assert entry["user_metadata"] == {"size": "999", "mimetype": "evil/x"}


def test_listing(s3):
    s3.create_bucket(Bucket="listing")
    keys = ["a", "b/1", "b/2", "c/x/1", "d"] + [f"many/{i:03}" for i in range(12)]
    for k in keys:
        s3.put_object(Bucket="listing", Key=k, Body=k.encode())
    top = s3.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a", "d"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["b/", "c/", "many/"]
    seen, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket="listing", Prefix="many/", MaxKeys=5, **({"ContinuationToken": token} if token else {}))
        seen += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == [f"many/{i:03}" for i in range(12)]
    after = s3.list_objects_v2(Bucket="listing", StartAfter="many/009")
    assert [o["Key"] for o in after["Contents"]] == ["many/010", "many/011"]
    paginator = s3.get_paginator("list_objects_v2")
    assert sum(len(p.get("Contents", [])) for p in paginator.paginate(Bucket="listing", PaginationConfig={"PageSize": 4})) == len(keys)
    deleted = s3.delete_objects(Bucket="listing", Delete={"Objects": [{"Key": "a"}, {"Key": "nope"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["a", "nope"]


def test_multipart(s3):
    part1, part2 = os.urandom(5 << 20), os.urandom(123_456)
    up = s3.create_multipart_upload(Bucket="docs", Key="mp.bin", ContentType="app/mp")["UploadId"]
    e2 = s3.upload_part(Bucket="docs", Key="mp.bin", UploadId=up, PartNumber=2, Body=part2)["ETag"]
    e1 = s3.upload_part(Bucket="docs", Key="mp.bin", UploadId=up, PartNumber=1, Body=part1)["ETag"]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="docs", Key="mp.bin", UploadId=up)["Parts"]] == [1, 2]
    page = s3.list_parts(Bucket="docs", Key="mp.bin", UploadId=up, MaxParts=1)
    assert [p["PartNumber"] for p in page["Parts"]] == [1] and page["IsTruncated"] and page["NextPartNumberMarker"] == 1
    rest = s3.list_parts(Bucket="docs", Key="mp.bin", UploadId=up, PartNumberMarker=1)  # before: the marker and
    assert [p["PartNumber"] for p in rest["Parts"]] == [2] and not rest["IsTruncated"]  # max-parts were ignored
    out_of_order = {"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]}
    assert code(lambda: s3.complete_multipart_upload(Bucket="docs", Key="mp.bin", UploadId=up, MultipartUpload=out_of_order)) == "InvalidPartOrder"
    wrong = {"Parts": [{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]}
    assert code(lambda: s3.complete_multipart_upload(Bucket="docs", Key="mp.bin", UploadId=up, MultipartUpload=wrong)) == "InvalidPart"
    assert code(lambda: s3.head_object(Bucket="docs", Key="mp.bin")) == "404"  # nothing visible yet
    done = s3.complete_multipart_upload(Bucket="docs", Key="mp.bin", UploadId=up,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    md5s = hashlib.md5(bytes.fromhex(e1.strip('"')) + bytes.fromhex(e2.strip('"'))).hexdigest()
    assert done["ETag"] == f'"{md5s}-2"'
    got = s3.get_object(Bucket="docs", Key="mp.bin")
    assert got["Body"].read() == part1 + part2 and got["ContentType"] == "app/mp"
    across = s3.get_object(Bucket="docs", Key="mp.bin", Range=f"bytes={(5 << 20) - 2}-{(5 << 20) + 1}")["Body"].read()
    assert across == part1[-2:] + part2[:2]  # a range over the parts' seam
    small = s3.create_multipart_upload(Bucket="docs", Key="small")["UploadId"]
    s1 = s3.upload_part(Bucket="docs", Key="small", UploadId=small, PartNumber=1, Body=b"tiny")["ETag"]
    s2 = s3.upload_part(Bucket="docs", Key="small", UploadId=small, PartNumber=2, Body=b"tiny")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": s1}, {"PartNumber": 2, "ETag": s2}]}
    assert code(lambda: s3.complete_multipart_upload(Bucket="docs", Key="small", UploadId=small, MultipartUpload=parts)) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket="docs", Key="small", UploadId=small)
    assert code(lambda: s3.list_parts(Bucket="docs", Key="small", UploadId=small)) == "NoSuchUpload"


def test_list_multipart_uploads(s3):
    s3.create_bucket(Bucket="mpu-listing")

    def start(key):
        return s3.create_multipart_upload(Bucket="mpu-listing", Key=key)["UploadId"]

    def listed(**args):
        page = s3.list_multipart_uploads(Bucket="mpu-listing", **args)
        return [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])], [p["Prefix"] for p in page.get("CommonPrefixes", [])]

    # Three uploads of one key, between others: listed by key, then by initiation (not by upload id).
    ids = {}
    for key in ("d", "b/one", "a", "b/one", "c/x/1", "b/one", "b/two"):
        ids.setdefault(key, []).append(start(key))
    everything = [(k, u) for k in sorted(ids) for u in ids[k]]
    page = s3.list_multipart_uploads(Bucket="mpu-listing")
    assert listed() == (everything, []) and not page["IsTruncated"] and page["MaxUploads"] == 1000
    upload = page["Uploads"][0]
    assert upload["StorageClass"] == "STANDARD" and upload["Owner"]["ID"] == upload["Initiator"]["ID"] == "files"
    assert abs((upload["Initiated"] - datetime.now(timezone.utc)).total_seconds()) < 60
    assert listed(Prefix="b/") == ([e for e in everything if e[0].startswith("b/")], [])
    assert listed(Delimiter="/") == ([("a", ids["a"][0]), ("d", ids["d"][0])], ["b/", "c/"])
    assert listed(Prefix="c/", Delimiter="/") == ([], ["c/x/"])
    assert listed(KeyMarker="b/one") == (everything[4:], [])  # past every upload of the key
    assert listed(KeyMarker="b/", Delimiter="/") == ([("d", ids["d"][0])], ["c/"])  # past the folder

    # Pages of two, the second starting inside b/one's uploads.
    first = s3.list_multipart_uploads(Bucket="mpu-listing", MaxUploads=2)
    assert first["IsTruncated"] and (first["NextKeyMarker"], first["NextUploadIdMarker"]) == everything[1]
    seen, markers = [], {}
    while True:
        page = s3.list_multipart_uploads(Bucket="mpu-listing", MaxUploads=2, **markers)
        seen += [(u["Key"], u["UploadId"]) for u in page["Uploads"]]
        if not page["IsTruncated"]:
            break
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == everything
    paginator = s3.get_paginator("list_multipart_uploads")
    pages = list(paginator.paginate(Bucket="mpu-listing", PaginationConfig={"PageSize": 3}))
    assert [(u["Key"], u["UploadId"]) for p in pages for u in p["Uploads"]] == everything and len(pages) == 3
    folders = list(paginator.paginate(Bucket="mpu-listing", Delimiter="/", PaginationConfig={"PageSize": 1}))
    assert [c["Prefix"] for p in folders for c in p.get("CommonPrefixes", [])] == ["b/", "c/"]
    assert [u["Key"] for p in folders for u in p.get("Uploads", [])] == ["a", "d"]

    # A completed or aborted upload is no longer in progress; the key's others still are.
    done = ids["b/one"][1]
    etag = s3.upload_part(Bucket="mpu-listing", Key="b/one", UploadId=done, PartNumber=1, Body=b"done")["ETag"]
    s3.complete_multipart_upload(Bucket="mpu-listing", Key="b/one", UploadId=done,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    s3.abort_multipart_upload(Bucket="mpu-listing", Key="a", UploadId=ids["a"][0])
    assert listed() == ([e for e in everything if e[1] not in (done, ids["a"][0])], [])
    # A marker upload completed since its page: the next page lists the key's uploads from its first.
    assert listed(KeyMarker="b/one", UploadIdMarker=done) == ([e for e in everything if e[0] >= "b/one" and e[1] != done], [])

    # Deleting the bucket aborts what is in progress: made again, it has no uploads.
    s3.upload_part(Bucket="mpu-listing", Key="d", UploadId=ids["d"][0], PartNumber=1, Body=b"part")
    s3.delete_object(Bucket="mpu-listing", Key="b/one")
    s3.delete_bucket(Bucket="mpu-listing")
    s3.create_bucket(Bucket="mpu-listing")
    assert listed() == ([], [])
    with pytest.raises(ClientError, match="NoSuchUpload"):
        s3.upload_part(Bucket="mpu-listing", Key="d", UploadId=ids["d"][0], PartNumber=2, Body=b"part")


def test_list_multipart_uploads_arguments(host, s3):
    cart, server = host
    unchecked = client(new_key(cart, server), parameter_validation=False)  # sends max-uploads as given
    s3.create_bucket(Bucket="mpu-args")
    up = s3.create_multipart_upload(Bucket="mpu-args", Key="with space~/k")["UploadId"]
    for value, message in ((-1, "Argument max-uploads must be an integer between 0 and 2147483647"),
                           ("abc", "Provided max-uploads not an integer or within integer range"),
                           (2 ** 31, "Provided max-uploads not an integer or within integer range")):
        assert error(lambda: unchecked.list_multipart_uploads(Bucket="mpu-args", MaxUploads=value)) == (400, "InvalidArgument", message)
    assert s3.list_multipart_uploads(Bucket="mpu-args", MaxUploads=5000)["MaxUploads"] == 1000  # served at the cap
    assert error(lambda: s3.list_multipart_uploads(Bucket="mpu-args", EncodingType="base64"))[:2] == (400, "InvalidArgument")
    assert code(lambda: s3.list_multipart_uploads(Bucket="mpu-none")) == "NoSuchBucket"
    encoded = s3.list_multipart_uploads(Bucket="mpu-args", EncodingType="url", Prefix="with ")
    assert (encoded["EncodingType"], encoded["Prefix"], encoded["Uploads"][0]["Key"]) == ("url", "with+", "with+space%7E/k")
    assert encoded["Uploads"][0]["UploadId"] == up


def test_upload_part_copy(s3):
    data = os.urandom(12 << 20)
    s3.put_object(Bucket="docs", Key="upc/src", Body=data)
    small = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    s3.copy({"Bucket": "docs", "Key": "upc/src"}, "avatars", "upc/copy", Config=small)  # three UploadPartCopy
    assert s3.get_object(Bucket="avatars", Key="upc/copy")["Body"].read() == data
    up = s3.create_multipart_upload(Bucket="docs", Key="upc/ranged")["UploadId"]
    part = s3.upload_part_copy(Bucket="docs", Key="upc/ranged", UploadId=up, PartNumber=1,
                               CopySource={"Bucket": "docs", "Key": "upc/src"}, CopySourceRange="bytes=10-19")
    assert part["CopyPartResult"]["ETag"] == f'"{hashlib.md5(data[10:20]).hexdigest()}"'
    assert "LastModified" in part["CopyPartResult"]
    for source, range_, expected in ((("docs", "upc/none"), None, "NoSuchKey"), (("nobucket", "x"), None, "NoSuchBucket"),
                                     (("docs", "upc/src"), f"bytes=0-{12 << 20}", "InvalidArgument")):
        extra = {"CopySourceRange": range_} if range_ else {}
        assert code(lambda: s3.upload_part_copy(Bucket="docs", Key="upc/ranged", UploadId=up, PartNumber=2, **extra,
                                                CopySource={"Bucket": source[0], "Key": source[1]})) == expected
    s3.complete_multipart_upload(Bucket="docs", Key="upc/ranged", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket="docs", Key="upc/ranged")["Body"].read() == data[10:20]


def test_an_error_before_the_body_keeps_the_client_working(s3):
    # boto3 sends Expect: 100-continue: an error answered before the body was read must not
    # leave the connection to be reused with that body still owed.
    s3.put_object(Bucket="docs", Key="ok", Body=b"x")  # a kept-alive connection to reuse
    assert code(lambda: s3.put_object(Bucket="nosuchbkt", Key="k", Body=b"data")) == "NoSuchBucket"
    s3.put_object(Bucket="docs", Key="ok", Body=b"after NoSuchBucket")
    assert code(lambda: s3.upload_part(Bucket="docs", Key="k", UploadId="nope", PartNumber=1, Body=b"data")) == "NoSuchUpload"
    s3.put_object(Bucket="docs", Key="ok", Body=b"after NoSuchUpload")
    assert code(lambda: s3.upload_part(Bucket="docs", Key="k", UploadId="nope", PartNumber=0, Body=b"data")) == "InvalidArgument"
    s3.put_object(Bucket="docs", Key="ok", Body=b"after InvalidArgument")
    assert s3.get_object(Bucket="docs", Key="ok")["Body"].read() == b"after InvalidArgument"


def test_presigned_urls(s3):
    s3.put_object(Bucket="docs", Key="pre sign.txt", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "docs", "Key": "pre sign.txt"}, ExpiresIn=60)
    assert httpx.get(url).content == b"presigned"
    tampered = httpx.get(url.replace("pre%20sign.txt", "other.txt"))
    assert tampered.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in tampered.content
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "docs", "Key": "up.txt"}, ExpiresIn=60)
    assert httpx.put(put_url, content=b"uploaded").status_code == 200
    assert s3.get_object(Bucket="docs", Key="up.txt")["Body"].read() == b"uploaded"
    cut = urlsplit(s3.generate_presigned_url("put_object", Params={"Bucket": "docs", "Key": "cut.txt"}, ExpiresIn=60))
    reply = cut_short(int(cut.port), f"{cut.path}?{cut.query}")
    assert reply.startswith("HTTP/1.1 400") and "<Code>IncompleteBody</Code>" in reply, reply  # before: 500, as JSON
    assert code(lambda: s3.head_object(Bucket="docs", Key="cut.txt")) == "404"
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "docs", "Key": "up.txt"}, ExpiresIn=1)
    time.sleep(2.1)
    expired = httpx.get(short)
    assert expired.status_code == 403 and b"expired" in expired.content


def test_bad_requests(host, s3):
    cart, server = host
    key = new_key(cart, server)
    assert code(lambda: client(key, secret="wrong" * 8).list_buckets()) == "SignatureDoesNotMatch"
    other = dict(key, endpoint=f"{server.base}/nobody-else/storage/v1/s3")
    assert httpx.get(other["endpoint"]).status_code == 404  # no such app
    anonymous = httpx.get(key["endpoint"] + "/docs")
    assert anonymous.status_code == 403 and b"<Code>AccessDenied</Code>" in anonymous.content
    assert code(lambda: s3.put_object(Bucket="docs", Key="md5", Body=b"abc", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")) == "BadDigest"
    assert code(lambda: s3.head_object(Bucket="docs", Key="md5")) == "404"
    assert code(lambda: s3.put_object(Bucket="docs", Key="crc", Body=b"abc", ChecksumCRC32="AAAAAA==")) == "BadDigest"
    assert code(lambda: s3.put_object(Bucket="docs", Key="../escape", Body=b"x")) == "InvalidArgument"
    assert code(lambda: s3.put_object(Bucket="docs", Key="x" * 1100, Body=b"x")) in ("KeyTooLongError", "400")


def test_a_body_over_the_apps_limit_is_s3s_entity_too_large(host, tmp_path):
    cart, server = host
    cart.deploy(copy_app(TEST_APPS / "files", tmp_path / "small", name="small", limits={"bodyMb": 1}))
    c = client(new_key(cart, server, "small"))
    status, error_code, message = error(lambda: c.put_object(Bucket="docs", Key="big", Body=b"x" * (2 << 20)))
    # before: a 413 in JSON, which S3 clients show as a bare "413"
    assert (status, error_code) == (400, "EntityTooLarge") and "limits.bodyMb" in message
    assert code(lambda: c.head_object(Bucket="docs", Key="big")) == "404"
    assert c.put_object(Bucket="docs", Key="fits", Body=b"x" * 1000)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_key_sees_only_its_app(host, tmp_path, s3):
    cart, server = host
    cart.deploy(copy_app(TEST_APPS / "files", tmp_path / "twin", name="twin"))
    files_key = new_key(cart, server)
    stolen = client(dict(files_key, endpoint=f"{server.base}/twin/storage/v1/s3"))
    assert code(stolen.list_buckets) == "InvalidAccessKeyId"
    twin_s3 = client(new_key(cart, server, "twin"))
    twin_s3.put_object(Bucket="docs", Key="twin-only", Body=b"t")
    assert code(lambda: s3.get_object(Bucket="docs", Key="twin-only")) == "NoSuchKey"
    twin_s3.create_bucket(Bucket="twin-bucket")
    twin_s3.put_object(Bucket="twin-bucket", Key="k", Body=b"t")
    up = s3.create_multipart_upload(Bucket="docs", Key="stolen")["UploadId"]
    twin_up = twin_s3.create_multipart_upload(Bucket="docs", Key="stolen")["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="docs", Prefix="stolen")["Uploads"]] == [up]
    assert [u["UploadId"] for u in twin_s3.list_multipart_uploads(Bucket="docs", Prefix="stolen")["Uploads"]] == [twin_up]
    assert code(lambda: s3.list_multipart_uploads(Bucket="twin-bucket")) == "NoSuchBucket"
    for source, expected in (({"Bucket": "twin-bucket", "Key": "k"}, "NoSuchBucket"), ({"Bucket": "docs", "Key": "twin-only"}, "NoSuchKey")):
        assert code(lambda: s3.copy_object(Bucket="docs", Key="stolen", CopySource=source)) == expected
        assert code(lambda: s3.upload_part_copy(Bucket="docs", Key="stolen", UploadId=up, PartNumber=1, CopySource=source)) == expected
    cart.cli("remove", "twin")


def test_aws_cli_cp_sync_ls(host, tmp_path):
    cart, server = host
    key = new_key(cart, server)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key["accessKeyId"], "AWS_SECRET_ACCESS_KEY": key["secretAccessKey"],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def aws(*args):
        proc = subprocess.run([AWS, "--endpoint-url", key["endpoint"], "--no-progress", *args] if args[0] == "s3" and args[1] in ("cp", "sync") else
                              [AWS, "--endpoint-url", key["endpoint"], *args], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    big = os.urandom(12 << 20)  # over the CLI's 8 MiB multipart threshold
    (src / "big.bin").write_bytes(big)
    (src / "sub" / "a.txt").write_text("hello")
    aws("s3", "cp", str(src / "big.bin"), "s3://docs/cli/big.bin")
    aws("s3", "cp", "s3://docs/cli/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big
    aws("s3", "sync", str(src), "s3://docs/synced/")
    listed = aws("s3", "ls", "s3://docs/synced/", "--recursive")
    assert "synced/big.bin" in listed and "synced/sub/a.txt" in listed
    assert "upload:" not in aws("s3", "sync", str(src), "s3://docs/synced/")  # nothing changed, nothing sent
    assert "docs" in aws("s3", "ls")


def signed(key, method: str, path: str, headers: dict | None = None, body: bytes = b"", payload: str | None = None,
           query: str = "") -> httpx.Response:
    """A request signed by botocore's SigV4 signer, sent as built (for requests boto3 would not make)."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = key["endpoint"] + path + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    if payload is not None:  # S3's signer would put the body's SHA-256 in its place
        request.headers["X-Amz-Content-SHA256"] = payload
    signer = S3SigV4Auth if payload is None else SigV4Auth
    signer(Credentials(key["accessKeyId"], key["secretAccessKey"]), "s3", "eu-central-1").add_auth(request)
    return httpx.request(method, url, headers=dict(request.headers.items()), content=body)


def test_x_amz_headers_outside_the_signature_are_refused(host, s3):
    cart, server = host
    s3.put_object(Bucket="docs", Key="private/secret", Body=b"top secret")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "docs", "Key": "pub/avatar"}, ExpiresIn=60)
    # Before: the copy source turned the presigned upload into a copy of any object of the app.
    copied = httpx.put(put_url, headers={"x-amz-copy-source": "docs/private/secret"})
    assert copied.status_code == 403 and b"<HeadersNotSigned>x-amz-copy-source</HeadersNotSigned>" in copied.content
    meta = httpx.put(put_url, content=b"avatar", headers={"x-amz-meta-evil": "injected"})
    assert meta.status_code == 403 and b"<Code>AccessDenied</Code>" in meta.content
    assert code(lambda: s3.head_object(Bucket="docs", Key="pub/avatar")) == "404"
    assert httpx.put(put_url, content=b"avatar").status_code == 200  # as signed
    key = new_key(cart, server)
    request = signed(key, "PUT", "/docs/pub/meta", body=b"x")
    assert request.status_code == 200
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    unsigned = AWSRequest(method="PUT", url=key["endpoint"] + "/docs/pub/meta", data=b"y")
    S3SigV4Auth(Credentials(key["accessKeyId"], key["secretAccessKey"]), "s3", "eu-central-1").add_auth(unsigned)
    sent = httpx.put(unsigned.url, headers={**dict(unsigned.headers.items()), "x-amz-meta-added": "later"}, content=b"y")
    assert sent.status_code == 403 and b"x-amz-meta-added" in sent.content
    assert s3.get_object(Bucket="docs", Key="pub/meta")["Body"].read() == b"x"


def test_version_ids_are_refused_not_taken_for_the_current_object(s3):
    s3.put_object(Bucket="docs", Key="ver/a", Body=b"keep me")
    # before: each of these deleted, read or copied the current object
    assert code(lambda: s3.delete_object(Bucket="docs", Key="ver/a", VersionId="3HL4kqtJlcpXroDTDmJ")) == "InvalidArgument"
    assert code(lambda: s3.get_object(Bucket="docs", Key="ver/a", VersionId="abc")) == "InvalidArgument"
    assert code(lambda: s3.copy_object(Bucket="docs", Key="ver/b", CopySource={"Bucket": "docs", "Key": "ver/a", "VersionId": "x"})) == "InvalidArgument"
    reply = s3.delete_objects(Bucket="docs", Delete={"Objects": [{"Key": "ver/a", "VersionId": "someversion"}]})
    assert reply.get("Deleted", []) == [] and reply["Errors"][0]["Code"] == "InvalidArgument"
    assert s3.get_object(Bucket="docs", Key="ver/a", VersionId="null")["Body"].read() == b"keep me"  # the only version
    s3.delete_object(Bucket="docs", Key="ver/a", VersionId="null")
    assert code(lambda: s3.head_object(Bucket="docs", Key="ver/a")) == "404"


def test_parts_side_by_side_cannot_pass_the_quota_together(host, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cart, server = host
    cart.deploy(copy_app(TEST_APPS / "files", tmp_path / "quota", name="quota", limits={"storageMb": 10}))
    c = client(new_key(cart, server, "quota"), max_pool_connections=6)
    c.create_bucket(Bucket="qbk")
    upload = c.create_multipart_upload(Bucket="qbk", Key="big")["UploadId"]

    def part(n):
        try:
            return c.upload_part(Bucket="qbk", Key="big", UploadId=upload, PartNumber=n, Body=b"x" * (5 << 20))["ETag"]
        except ClientError as e:
            return e.response["Error"]["Code"]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(part, range(1, 7)))
    landed = [n for n, r in enumerate(results, 1) if r.startswith('"')]
    assert len(landed) <= 2 and set(results) - {results[n - 1] for n in landed} == {"QuotaExceeded"}, results
    assert sum(p["Size"] for p in c.list_parts(Bucket="qbk", Key="big", UploadId=upload).get("Parts", [])) <= 10 << 20
    # A part's upload is that bucket's and key's: another key gets NoSuchUpload (before: the part went in).
    assert code(lambda: c.upload_part(Bucket="qbk", Key="other", UploadId=upload, PartNumber=1, Body=b"y")) == "NoSuchUpload"
    c.abort_multipart_upload(Bucket="qbk", Key="big", UploadId=upload)


def test_aws_chunked_bodies_and_checksums(host, s3):
    cart, server = host
    key = new_key(cart, server)
    data = b"chunked body " * 1000
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

    def chunked(trailer_name="x-amz-checksum-crc32", value=crc, declared="x-amz-checksum-crc32", **headers):
        body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (data[:8192], data[8192:]))
        body += f"0\r\n{trailer_name}:{value}\r\n\r\n".encode()
        return signed(key, "PUT", "/docs/chunk/a", body=body, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER", headers={
            "content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": declared, **headers})

    first = chunked()
    assert first.status_code == 200, first.text
    got = s3.get_object(Bucket="docs", Key="chunk/a")
    assert got["Body"].read() == data and "ContentEncoding" not in got  # before: served as aws-chunked
    assert chunked(**{"content-encoding": "aws-chunked,gzip"}).status_code == 200
    assert s3.head_object(Bucket="docs", Key="chunk/a")["ContentEncoding"] == "gzip"
    bad = chunked(value="AAAAAA==")
    assert bad.status_code == 400 and b"<Code>BadDigest</Code>" in bad.content
    other = chunked(trailer_name="x-amz-checksum-sha1", value="AAAA")  # not the trailer declared
    assert other.status_code == 400 and b"<Code>InvalidRequest</Code>" in other.content
    # Checksums not checked here are refused, never stored unchecked; so are two at once.
    assert error(lambda: s3.put_object(Bucket="docs", Key="chunk/c", Body=b"abc", ChecksumCRC32C="AAAAAA=="))[:2] == (400, "InvalidRequest")
    two = signed(key, "PUT", "/docs/chunk/c", body=b"abc", headers={
        "x-amz-checksum-crc32": base64.b64encode(zlib.crc32(b"abc").to_bytes(4, "big")).decode(),
        "x-amz-checksum-sha1": base64.b64encode(hashlib.sha1(b"abc").digest()).decode()})
    assert two.status_code == 400 and b"Multiple checksum" in two.content
    # A payload hash that is no SHA-256 and no mode is refused, not taken for unsigned.
    odd = signed(key, "PUT", "/docs/chunk/c", body=b"abc", payload="notahash")
    assert odd.status_code == 400 and b"<Code>InvalidArgument</Code>" in odd.content
    assert code(lambda: s3.head_object(Bucket="docs", Key="chunk/c")) == "404"
    assert s3.get_object(Bucket="docs", Key="chunk/a")["Body"].read() == data  # the refusals changed nothing


def test_refused_writes_leave_no_upload_behind(host, s3):
    cart, _ = host
    import apsw

    def writing() -> int:
        conn = apsw.Connection(str(cart.path))
        try:
            return conn.execute("SELECT count(*) FROM blob_data WHERE state = 'writing'").fetchone()[0]
        finally:
            conn.close()

    s3.put_object(Bucket="docs", Key="src10", Body=b"0123456789")
    upload = s3.create_multipart_upload(Bucket="docs", Key="mp")["UploadId"]
    before = writing()
    assert code(lambda: s3.put_object(Bucket="docs", Key="d", Body=b"abc", ContentMD5="not base64")) == "InvalidDigest"
    assert code(lambda: s3.upload_part_copy(Bucket="docs", Key="mp", UploadId=upload, PartNumber=1,
                                            CopySource="docs/src10", CopySourceRange="bytes=5-50")) == "InvalidArgument"
    assert writing() == before  # before: a row each, until the hourly sweep
    s3.abort_multipart_upload(Bucket="docs", Key="mp", UploadId=upload)


def test_presigned_urls_dated_ahead_and_listing_encoding(host, s3, monkeypatch):
    import botocore.auth

    s3.put_object(Bucket="docs", Key="enc/a b+c ü", Body=b"x")
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: real() + timedelta(days=365))  # a year on
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "docs", "Key": "enc/a b+c ü"}, ExpiresIn=604800)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", real)
    ahead = httpx.get(url)  # before: served, and for a year and a week
    assert ahead.status_code == 403 and b"not valid yet" in ahead.content
    cart, server = host
    listing = signed(new_key(cart, server), "GET", "/docs", query="list-type=2&prefix=enc%2F&encoding-type=url")
    assert b"<EncodingType>url</EncodingType>" in listing.content and b"<Key>enc/a+b%2Bc+%C3%BC</Key>" in listing.content
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="docs", Prefix="enc/")["Contents"]] == ["enc/a b+c ü"]
    future = httpx.get(s3.generate_presigned_url("get_object", Params={"Bucket": "docs", "Key": "enc/a b+c ü"}),
                       headers={"if-modified-since": "Mon, 01 Jan 2035 00:00:00 GMT"})
    assert future.status_code == 200  # a date later than now is invalid, so ignored (RFC 9110)
