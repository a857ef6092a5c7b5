"""alisim's OSS through the official SDKs (oss2 and alibabacloud-oss-v2), unchanged.

Every test talks HTTP to the session's real server. Raw requests appear only where no SDK
would send them (garbage, tampering, anonymous, oversized); tampered ones start from oss2's
own signer.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import alibabacloud_oss_v2 as ossv2
import httpx
import oss2
import pytest
from oss2.utils import Crc64

from alisim.oss.crc64 import crc64_ecma
from alisim.server import AlisimServer

BUCKET = "alisim-test"
ODD_KEYS = [
    "plain.txt",
    "with space/and more spaces.bin",
    "unicode/ü中文/🚀.dat",
    "deep/a/b/c/d/e.txt",
    "symbols/a+b=c&d?e#f%g;h,i.txt",
    "trailing-slash-dir/",
]


def _error_code(response: httpx.Response) -> str:
    return ElementTree.fromstring(response.content).findtext("Code") or ""


@pytest.fixture
def region(sim: AlisimServer) -> str:
    return sim.cloud.settings.region


def request_sts(sim: AlisimServer) -> dict[str, str]:
    response = httpx.post(f"{sim.url}/_alisim/sts")
    response.raise_for_status()
    return response.json()


@pytest.fixture
def sts_key(sim: AlisimServer) -> dict[str, str]:
    return request_sts(sim)


@pytest.fixture(params=["v1", "v4", "sts-v1", "sts-v4"])
def bucket(
    request: pytest.FixtureRequest, sim: AlisimServer, access_key: tuple[str, str], region: str
) -> oss2.Bucket:
    """An oss2 bucket handle (created) under each signature version and credential kind."""
    kind = request.param
    if kind.startswith("sts"):
        key = request.getfixturevalue("sts_key")
        version = oss2.AUTH_VERSION_4 if kind.endswith("v4") else oss2.AUTH_VERSION_1
        auth = oss2.StsAuth(
            key["AccessKeyId"], key["AccessKeySecret"], key["SecurityToken"], auth_version=version
        )
    elif kind == "v4":
        auth = oss2.AuthV4(*access_key)
    else:
        auth = oss2.Auth(*access_key)
    handle = oss2.Bucket(auth, sim.url, BUCKET, region=region)
    handle.create_bucket()
    return handle


@pytest.fixture
def v1_bucket(sim: AlisimServer, access_key: tuple[str, str]) -> oss2.Bucket:
    handle = oss2.Bucket(oss2.Auth(*access_key), sim.url, BUCKET)
    handle.create_bucket()
    return handle


def _v2_client(
    sim: AlisimServer,
    key_id: str,
    secret: str,
    version: str = "v4",
    token: str | None = None,
    retries: bool = False,
) -> ossv2.Client:
    """A client for alisim; without retries an unexpected 5xx fails the test at once.

    oss-v2 1.4's `get_object_to_file` loops `range(1, attempts)`, so it needs the retryer.
    """
    cfg = ossv2.config.load_default()
    cfg.credentials_provider = ossv2.credentials.StaticCredentialsProvider(key_id, secret, token)
    cfg.region = sim.cloud.settings.region
    cfg.endpoint = sim.url
    cfg.signature_version = version
    cfg.use_path_style = True
    if not retries:
        cfg.retryer = ossv2.retry.NopRetryer()
    return ossv2.Client(cfg)


@pytest.fixture(params=["v4", "v1"])
def client(
    request: pytest.FixtureRequest, sim: AlisimServer, access_key: tuple[str, str]
) -> Iterator[ossv2.Client]:
    v2 = _v2_client(sim, *access_key, version=request.param)
    v2.put_bucket(ossv2.PutBucketRequest(bucket=BUCKET))
    yield v2


def _service_error(
    excinfo: pytest.ExceptionInfo[ossv2.exceptions.OperationError],
) -> ossv2.exceptions.ServiceError:
    error = excinfo.value.unwrap()
    assert isinstance(error, ossv2.exceptions.ServiceError)
    return error


# --- CRC-64 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 7, 1024, 1025, 65_536, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (3 << 20) + 12_345]
)
def test_crc64_matches_the_sdk_implementation(size: int) -> None:
    data = os.urandom(size)
    reference = Crc64()
    reference(data)
    assert crc64_ecma(data) == reference.crc


def test_crc64_is_fast_enough_for_large_objects() -> None:
    data = os.urandom(16 << 20)
    started = time.perf_counter()
    crc64_ecma(data)
    assert time.perf_counter() - started < 2.0


# --- oss2: objects ----------------------------------------------------------------------


def test_put_get_head_delete(bucket: oss2.Bucket) -> None:
    put = bucket.put_object(
        "hello.txt",
        b"hello world",
        headers={"Content-Type": "text/x-test", "x-oss-meta-Owner": "ops"},
    )
    assert put.status == 200
    assert put.etag == hashlib.md5(b"hello world").hexdigest().upper()
    assert put.crc == crc64_ecma(b"hello world")

    got = bucket.get_object("hello.txt")
    assert got.read() == b"hello world"
    assert got.client_crc == got.server_crc
    assert got.content_type == "text/x-test"
    assert got.headers["x-oss-meta-owner"] == "ops"
    assert got.headers["x-oss-request-id"]
    assert got.headers["Last-Modified"].endswith("GMT")

    head = bucket.head_object("hello.txt")
    assert head.content_length == 11
    assert head.etag == put.etag
    assert head.object_type == "Normal"
    assert bucket.object_exists("hello.txt")

    bucket.delete_object("hello.txt")
    bucket.delete_object("hello.txt")
    assert not bucket.object_exists("hello.txt")


def test_missing_key_and_bucket_raise_the_sdk_exceptions(bucket: oss2.Bucket) -> None:
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.get_object("missing")
    with pytest.raises(oss2.exceptions.NoSuchKey) as head_error:
        bucket.head_object("missing")
    assert head_error.value.request_id
    other = oss2.Bucket(bucket.auth, bucket.endpoint, "no-such-bucket", region=bucket.region)
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        other.get_object("k")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        other.put_object("k", b"v")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        other.object_exists("k")


def test_odd_keys_round_trip_and_list(bucket: oss2.Bucket) -> None:
    for index, key in enumerate(ODD_KEYS):
        bucket.put_object(key, f"body {index}".encode())
    for index, key in enumerate(ODD_KEYS):
        assert bucket.get_object(key).read() == f"body {index}".encode()
    listed = [obj.key for obj in oss2.ObjectIteratorV2(bucket)]
    assert listed == sorted(ODD_KEYS, key=lambda k: k.encode("utf-8"))
    assert [obj.key for obj in oss2.ObjectIterator(bucket)] == listed


def test_ranges(v1_bucket: oss2.Bucket) -> None:
    data = bytes(range(100))
    v1_bucket.put_object("r", data)
    for byte_range, expected, content_range in [
        ((10, 19), data[10:20], "bytes 10-19/100"),
        ((90, None), data[90:], "bytes 90-99/100"),
        ((None, 5), data[-5:], "bytes 95-99/100"),
        ((0, 0), data[:1], "bytes 0-0/100"),
    ]:
        result = v1_bucket.get_object("r", byte_range=byte_range)
        assert result.status == 206
        assert result.headers["Content-Range"] == content_range
        assert result.read() == expected

    # Out of range: OSS answers with the whole object by default...
    whole = v1_bucket.get_object("r", byte_range=(100, 200))
    assert whole.status == 200
    assert whole.read() == data
    assert v1_bucket.get_object("r", byte_range=(50, 500)).status == 200
    # ...and clamps or refuses under the standard behaviour.
    standard = {"x-oss-range-behavior": "standard"}
    clamped = v1_bucket.get_object("r", byte_range=(50, 500), headers=standard)
    assert clamped.status == 206
    assert clamped.read() == data[50:]
    with pytest.raises(oss2.exceptions.ServerError) as refused:
        v1_bucket.get_object("r", byte_range=(100, 200), headers=standard)
    assert (refused.value.status, refused.value.code) == (416, "InvalidRange")


def test_conditional_get(v1_bucket: oss2.Bucket) -> None:
    etag = v1_bucket.put_object("c", b"content").etag
    with pytest.raises(oss2.exceptions.NotModified):
        v1_bucket.get_object("c", headers={"If-None-Match": f'"{etag}"'})
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        v1_bucket.get_object("c", headers={"If-Match": '"0000"'})
    assert v1_bucket.get_object("c", headers={"If-Match": f'"{etag}"'}).read() == b"content"


def test_content_md5_is_checked(v1_bucket: oss2.Bucket) -> None:
    good = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    v1_bucket.put_object("m", b"payload", headers={"Content-MD5": good})
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(oss2.exceptions.InvalidDigest):
        v1_bucket.put_object("m", b"payload", headers={"Content-MD5": wrong})
    with pytest.raises(oss2.exceptions.InvalidDigest):
        v1_bucket.put_object("m", b"payload", headers={"Content-MD5": "not-base64!"})


def test_large_object_round_trip_with_crc(v1_bucket: oss2.Bucket, tmp_path: Path) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)
    put = v1_bucket.put_object("big.bin", data)
    assert put.crc == crc64_ecma(data)
    got = v1_bucket.get_object("big.bin")
    assert got.read() == data
    assert got.client_crc == got.server_crc
    target = tmp_path / "big.bin"
    v1_bucket.get_object_to_file("big.bin", str(target))
    assert target.read_bytes() == data


def test_copy_and_batch_delete(v1_bucket: oss2.Bucket) -> None:
    v1_bucket.put_object("src key", b"copy me", headers={"x-oss-meta-a": "1"})
    v1_bucket.copy_object(BUCKET, "src key", "dst/ü key")
    copied = v1_bucket.get_object("dst/ü key")
    assert copied.read() == b"copy me"
    assert copied.headers["x-oss-meta-a"] == "1"
    result = v1_bucket.batch_delete_objects(["src key", "dst/ü key", "never existed"])
    assert sorted(result.deleted_keys) == ["dst/ü key", "never existed", "src key"]
    assert list(oss2.ObjectIteratorV2(v1_bucket)) == []


# --- oss2: listings ---------------------------------------------------------------------


def test_list_prefix_delimiter_and_pagination(bucket: oss2.Bucket) -> None:
    keys = [f"logs/2024/{n:02d}.log" for n in range(12)] + [
        "logs/2025/01.log",
        "logs/2025/02.log",
        "logs/readme",
        "other/x",
    ]
    for key in keys:
        bucket.put_object(key, b"x")

    top = bucket.list_objects_v2(prefix="logs/", delimiter="/")
    assert top.prefix_list == ["logs/2024/", "logs/2025/"]
    assert [o.key for o in top.object_list] == ["logs/readme"]

    page = bucket.list_objects_v2(prefix="logs/2024/", max_keys=5)
    assert page.is_truncated and len(page.object_list) == 5
    rest = bucket.list_objects_v2(
        prefix="logs/2024/", max_keys=5, continuation_token=page.next_continuation_token
    )
    assert rest.object_list[0].key == "logs/2024/05.log"

    paged = [o.key for o in oss2.ObjectIteratorV2(bucket, prefix="logs/", max_keys=3)]
    assert paged == sorted(k for k in keys if k.startswith("logs/"))
    by_dir = [o.key for o in oss2.ObjectIteratorV2(bucket, delimiter="/", max_keys=1)]
    assert by_dir == ["logs/", "other/"]
    v1 = [o.key for o in oss2.ObjectIterator(bucket, prefix="logs/", max_keys=4)]
    assert v1 == paged
    raw = bucket.list_objects_v2(prefix="logs/2025/", encoding_type="")
    assert [o.key for o in raw.object_list] == ["logs/2025/01.log", "logs/2025/02.log"]
    after = bucket.list_objects_v2(prefix="logs/", start_after="logs/2025/01.log")
    assert [o.key for o in after.object_list] == ["logs/2025/02.log", "logs/readme"]
    marker = bucket.list_objects(prefix="logs/", delimiter="/", marker="logs/2024/", max_keys=1)
    assert marker.prefix_list == ["logs/2025/"]
    assert marker.is_truncated


def test_list_buckets_and_bucket_lifecycle(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    auth = oss2.Auth(*access_key)
    names = ["bucket-a", "bucket-b", "bucket-c"]
    for name in names:
        oss2.Bucket(auth, sim.url, name).create_bucket()
    service = oss2.Service(auth, sim.url)
    assert [b.name for b in service.list_buckets().buckets] == names
    assert [b.name for b in oss2.BucketIterator(service, max_keys=2)] == names
    listed = service.list_buckets(prefix="bucket-b").buckets[0]
    assert listed.location == f"oss-{sim.cloud.settings.region}"

    bucket = oss2.Bucket(auth, sim.url, "bucket-a")
    info = bucket.get_bucket_info()
    assert (info.name, info.acl.grant) == ("bucket-a", "private")
    with pytest.raises(oss2.exceptions.ServerError) as exists:
        bucket.create_bucket()
    assert (exists.value.status, exists.value.code) == (409, "BucketAlreadyExists")
    bucket.put_object("k", b"v")
    with pytest.raises(oss2.exceptions.BucketNotEmpty):
        bucket.delete_bucket()
    bucket.delete_object("k")
    bucket.delete_bucket()
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        bucket.delete_bucket()


# --- oss2: authentication ---------------------------------------------------------------


@pytest.mark.parametrize("auth_class", [oss2.Auth, oss2.AuthV4])
def test_wrong_secret_is_signature_mismatch(
    sim: AlisimServer, access_key: tuple[str, str], region: str, auth_class: type
) -> None:
    oss2.Bucket(oss2.Auth(*access_key), sim.url, BUCKET).create_bucket()
    wrong = oss2.Bucket(auth_class(access_key[0], "not-the-secret"), sim.url, BUCKET, region=region)
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        wrong.put_object("k", b"v")
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        wrong.list_objects_v2()


@pytest.mark.parametrize("auth_class", [oss2.Auth, oss2.AuthV4])
def test_unknown_key_id_is_invalid_access_key_id(
    sim: AlisimServer, region: str, auth_class: type
) -> None:
    stranger = oss2.Bucket(auth_class("LTAI-unknown", "secret"), sim.url, BUCKET, region=region)
    with pytest.raises(oss2.exceptions.ServerError) as error:
        stranger.get_object("k")
    assert (error.value.status, error.value.code) == (403, "InvalidAccessKeyId")


def test_sts_token_is_required_and_checked(sim: AlisimServer, sts_key: dict[str, str]) -> None:
    key_id, secret = sts_key["AccessKeyId"], sts_key["AccessKeySecret"]
    without_token = oss2.Bucket(oss2.Auth(key_id, secret), sim.url, BUCKET)
    with pytest.raises(oss2.exceptions.ServerError) as missing:
        without_token.create_bucket()
    assert (missing.value.status, missing.value.code) == (403, "InvalidAccessKeyId")
    bad_token = oss2.Bucket(oss2.StsAuth(key_id, secret, "forged"), sim.url, BUCKET)
    with pytest.raises(oss2.exceptions.ServerError) as forged:
        bad_token.create_bucket()
    assert (forged.value.status, forged.value.code) == (403, "InvalidSecurityToken")


def _signed(
    bucket: oss2.Bucket,
    method: str,
    key: str,
    headers: dict[str, str] | None = None,
    data: bytes = b"",
) -> tuple[str, dict[str, str]]:
    """URL and headers exactly as oss2 would send them, for requests to tamper with."""
    url = f"{bucket.endpoint}/{bucket.bucket_name}/{quote(key, safe='')}"
    request = oss2.http.Request(method, url, data=data, headers=dict(headers or {}))
    bucket.auth._sign_request(request, bucket.bucket_name, key)
    return url, {k: v for k, v in request.headers.items() if v is not None}


def test_tampered_requests_are_rejected(v1_bucket: oss2.Bucket, sim: AlisimServer) -> None:
    url, headers = _signed(v1_bucket, "PUT", "doc", {"x-oss-meta-role": "reader"}, b"data")
    headers["x-oss-meta-role"] = "admin"
    response = httpx.put(url, headers=headers, content=b"data")
    assert (response.status_code, _error_code(response)) == (403, "SignatureDoesNotMatch")
    assert ElementTree.fromstring(response.content).findtext("StringToSign")

    url, headers = _signed(v1_bucket, "GET", "doc")
    response = httpx.get(url.replace("/doc", "/other"), headers=headers)
    assert (response.status_code, _error_code(response)) == (403, "SignatureDoesNotMatch")

    signed_url = v1_bucket.sign_url("GET", "doc", 60)
    assert httpx.get(signed_url).status_code == 404
    response = httpx.get(signed_url.replace("/doc?", "/doc2?"))
    assert _error_code(response) == "SignatureDoesNotMatch"


def test_presigned_urls(sim: AlisimServer, access_key: tuple[str, str], region: str) -> None:
    v1 = oss2.Bucket(oss2.Auth(*access_key), sim.url, BUCKET)
    v1.create_bucket()
    v1.put_object("shared file.txt", b"shared")
    v4 = oss2.Bucket(oss2.AuthV4(*access_key), sim.url, BUCKET, region=region)
    for handle in (v1, v4):
        response = httpx.get(handle.sign_url("GET", "shared file.txt", 60))
        assert response.status_code == 200
        assert response.content == b"shared"
    expired = httpx.get(v1.sign_url("GET", "shared file.txt", -10))
    assert (expired.status_code, _error_code(expired)) == (403, "AccessDenied")
    key = request_sts(sim)
    for version in (oss2.AUTH_VERSION_1, oss2.AUTH_VERSION_4):
        auth = oss2.StsAuth(
            key["AccessKeyId"], key["AccessKeySecret"], key["SecurityToken"], auth_version=version
        )
        sts = oss2.Bucket(auth, sim.url, BUCKET, region=region)
        assert httpx.get(sts.sign_url("GET", "shared file.txt", 60)).content == b"shared"


def test_clock_skew_and_anonymous_requests(v1_bucket: oss2.Bucket, sim: AlisimServer) -> None:
    url, headers = _signed(v1_bucket, "GET", "k")
    headers["date"] = formatdate(time.time() - 3600, usegmt=True)
    skewed = httpx.get(url, headers=headers)
    assert (skewed.status_code, _error_code(skewed)) == (403, "RequestTimeTooSkewed")
    anonymous = httpx.get(f"{sim.url}/{BUCKET}/k")
    assert (anonymous.status_code, _error_code(anonymous)) == (403, "AccessDenied")
    anonymous_head = httpx.head(f"{sim.url}/{BUCKET}/k")
    assert anonymous_head.status_code == 403
    assert anonymous_head.content == b""
    hidden = base64.b64decode(anonymous_head.headers["x-oss-err"])
    assert ElementTree.fromstring(hidden).findtext("Code") == "AccessDenied"


# --- malformed input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", f"/{BUCKET}/k", {"Authorization": "garbage"}, 400, "InvalidArgument"),
        ("GET", f"/{BUCKET}/k", {"Authorization": "OSS no-colon"}, 400, "InvalidArgument"),
        (
            "GET",
            f"/{BUCKET}/k",
            {"Authorization": "OSS a:b", "Date": "yesterday"},
            403,
            "AccessDenied",
        ),
        (
            "GET",
            f"/{BUCKET}/k",
            {"Authorization": "OSS4-HMAC-SHA256 Credential=x"},
            400,
            "InvalidArgument",
        ),
        (
            "GET",
            f"/{BUCKET}/k",
            {
                "Authorization": "OSS4-HMAC-SHA256 Credential=a/b/c/d/e, Signature=0",
                "x-oss-date": "20240101T000000Z",
            },
            403,
            "RequestTimeTooSkewed",
        ),
        ("GET", f"/{BUCKET}/%ff%fe", {}, 400, "InvalidURI"),
        ("GET", f"/{BUCKET}/k?prefix=%ff", {}, 400, "InvalidURI"),
        ("PATCH", f"/{BUCKET}/k", {}, 405, "MethodNotAllowed"),
        ("POST", "/", {}, 405, "MethodNotAllowed"),
        ("GET", f"/{BUCKET}/k?uploads", {}, 501, "NotImplemented"),
    ],
)
def test_malformed_requests_get_xml_errors(
    sim: AlisimServer,
    access_key: tuple[str, str],
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = httpx.request(method, sim.url + path, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ElementTree.fromstring(response.content)
    assert root.tag == "Error"
    assert root.findtext("Code") == code
    assert root.findtext("RequestId") == response.headers["x-oss-request-id"]
    # The server is unharmed and keeps serving signed requests.
    handle = oss2.Bucket(oss2.Auth(*access_key), sim.url, BUCKET)
    handle.create_bucket()
    handle.put_object("after", b"still here")
    assert handle.get_object("after").read() == b"still here"


def test_oversized_body_is_refused_before_it_is_read(
    v1_bucket: oss2.Bucket, sim: AlisimServer
) -> None:
    limit = sim.cloud.settings.oss_max_object_bytes
    url, headers = _signed(v1_bucket, "PUT", "huge", {"Content-Length": str(limit + 1)})
    # http.client, unlike httpx, lets the declared length exceed what is actually sent.
    connection = http.client.HTTPConnection(sim.host, sim.port, timeout=10)
    try:
        connection.putrequest("PUT", url.removeprefix(sim.url), skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(b"x")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 400
    assert ElementTree.fromstring(body).findtext("Code") == "EntityTooLarge"
    assert ElementTree.fromstring(body).findtext("MaxSizeAllowed") == str(limit)
    assert v1_bucket.put_object("small", b"ok").status == 200


def test_calls_are_counted(v1_bucket: oss2.Bucket, sim: AlisimServer) -> None:
    v1_bucket.put_object("k", b"v")
    v1_bucket.get_object("k").read()
    with pytest.raises(oss2.exceptions.NoSuchKey):
        v1_bucket.get_object("missing")
    calls = httpx.get(f"{sim.url}/_alisim/calls").json()["calls"]["Oss"]
    assert calls["PutBucket"] == 1
    assert calls["PutObject"] == 1
    assert calls["GetObject"] == 2


# --- alibabacloud-oss-v2 ----------------------------------------------------------------


def test_v2_put_get_head_delete(client: ossv2.Client) -> None:
    key = "dir/ü file+1.txt"
    put = client.put_object(
        ossv2.PutObjectRequest(
            bucket=BUCKET,
            key=key,
            body=b"hello v2",
            metadata={"team": "sre"},
            content_type="text/plain",
        )
    )
    assert put.hash_crc64 == str(crc64_ecma(b"hello v2"))
    got = client.get_object(ossv2.GetObjectRequest(bucket=BUCKET, key=key))
    assert got.body.read() == b"hello v2"
    assert got.metadata == {"team": "sre"}
    assert got.content_type == "text/plain"
    ranged = client.get_object(
        ossv2.GetObjectRequest(bucket=BUCKET, key=key, range_header="bytes=6-")
    )
    assert (ranged.status_code, ranged.content_range) == (206, "bytes 6-7/8")
    assert ranged.body.read() == b"v2"
    head = client.head_object(ossv2.HeadObjectRequest(bucket=BUCKET, key=key))
    assert head.content_length == 8
    assert head.etag == put.etag
    assert client.is_object_exist(BUCKET, key)
    client.delete_object(ossv2.DeleteObjectRequest(bucket=BUCKET, key=key))
    assert not client.is_object_exist(BUCKET, key)


def test_v2_errors_carry_the_real_codes(
    client: ossv2.Client, sim: AlisimServer, access_key: tuple[str, str]
) -> None:
    with pytest.raises(ossv2.exceptions.OperationError) as missing:
        client.get_object(ossv2.GetObjectRequest(bucket=BUCKET, key="missing"))
    assert (_service_error(missing).status_code, _service_error(missing).code) == (404, "NoSuchKey")
    with pytest.raises(ossv2.exceptions.OperationError) as head_missing:
        client.head_object(ossv2.HeadObjectRequest(bucket=BUCKET, key="missing"))
    assert _service_error(head_missing).code == "NoSuchKey"
    with pytest.raises(ossv2.exceptions.OperationError) as no_bucket:
        client.head_object(ossv2.HeadObjectRequest(bucket="absent-bucket", key="k"))
    assert _service_error(no_bucket).code == "NoSuchBucket"
    wrong = _v2_client(sim, access_key[0], "wrong-secret")
    with pytest.raises(ossv2.exceptions.OperationError) as mismatch:
        wrong.put_object(ossv2.PutObjectRequest(bucket=BUCKET, key="k", body=b"v"))
    assert (_service_error(mismatch).status_code, _service_error(mismatch).code) == (
        403,
        "SignatureDoesNotMatch",
    )


def test_v2_listing_with_paginator(client: ossv2.Client) -> None:
    keys = [f"data/{n:03d} item.json" for n in range(25)] + ["data/sub/x", "top"]
    for key in keys:
        client.put_object(ossv2.PutObjectRequest(bucket=BUCKET, key=key, body=b"{}"))
    paginator = client.list_objects_v2_paginator(limit=7)
    pages = list(paginator.iter_page(ossv2.ListObjectsV2Request(bucket=BUCKET, prefix="data/")))
    assert len(pages) == 4
    listed = [obj.key for page in pages for obj in page.contents]
    assert listed == sorted(k for k in keys if k.startswith("data/"))
    grouped = client.list_objects_v2(
        ossv2.ListObjectsV2Request(
            bucket=BUCKET,
            prefix="data/",
            delimiter="/",
            max_keys=100,
        )
    )
    assert [p.prefix for p in grouped.common_prefixes] == ["data/sub/"]
    assert grouped.key_count == 26
    buckets = client.list_buckets(ossv2.ListBucketsRequest())
    assert [b.name for b in buckets.buckets] == [BUCKET]


def test_v2_large_object_and_sts(
    sim: AlisimServer, sts_key: dict[str, str], tmp_path: Path
) -> None:
    sts = _v2_client(
        sim,
        sts_key["AccessKeyId"],
        sts_key["AccessKeySecret"],
        token=sts_key["SecurityToken"],
        retries=True,
    )
    sts.put_bucket(ossv2.PutBucketRequest(bucket=BUCKET))
    data = os.urandom(5 * 1024 * 1024 + 7)
    sts.put_object(ossv2.PutObjectRequest(bucket=BUCKET, key="big/blob.bin", body=data))
    target = tmp_path / "blob.bin"
    sts.get_object_to_file(ossv2.GetObjectRequest(bucket=BUCKET, key="big/blob.bin"), str(target))
    assert target.read_bytes() == data
    presigned = sts.presign(ossv2.GetObjectRequest(bucket=BUCKET, key="big/blob.bin"))
    assert hashlib.md5(httpx.get(presigned.url).content).digest() == hashlib.md5(data).digest()
