"""Request parsing and limits of the serving path (no model, no server: these run in milliseconds)."""
from __future__ import annotations

import base64
import math
import re

import pytest

from actionclip.serving.errors import ServingInputError
from actionclip.serving.limits import ServingLimits
from actionclip.serving.requests import check_template, group_by_text, parse_requests, parse_video_field

# trusted local use (paths on): what `actionclip predict` runs with; the served default is closed (see below)
LIMITS = ServingLimits(max_video_bytes=1000, max_labels=3, max_templates=2, max_videos=2, max_top_k=10,
                       allow_paths=True)


@pytest.fixture()
def clip(tmp_path):
    p = tmp_path / "clip.mp4"
    p.write_bytes(b"\x00" * 100)
    return p


def test_defaults_and_fields(clip):
    (r,) = parse_requests([{"video": str(clip)}], LIMITS)
    assert r.video.path == str(clip) and r.video.data is None
    assert r.labels is None and r.templates is None and r.top_k == 5 and r.return_all is False
    (r,) = parse_requests({"video": str(clip), "labels": ["a", "b"], "templates": ["a {}"], "top_k": 2,
                           "return_all": True}, LIMITS)
    assert r.labels == ("a", "b") and r.templates == ("a {}",) and r.top_k == 2 and r.return_all


def test_pandas_missing_values_are_defaults(clip):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([{"video": str(clip), "labels": ["a"], "top_k": 2}, {"video": str(clip)}])
    a, b = parse_requests(df, LIMITS)
    assert a.labels == ("a",) and a.top_k == 2
    assert b.labels is None and b.top_k == 5  # NaN from pandas means "not given"


def test_video_sources(clip):
    data = b"\x00\x00\x00\x1cftypisom" + b"x" * 50
    b64 = base64.b64encode(data).decode()
    assert parse_video_field(b64, LIMITS).data == data
    assert parse_video_field(f"data:video/mp4;base64,{b64}", LIMITS).data == data
    assert parse_video_field(base64.urlsafe_b64encode(data).decode().rstrip("="), LIMITS).data == data
    assert parse_video_field(clip.as_uri(), LIMITS).path == str(clip)
    assert parse_video_field(data, LIMITS).data == data


@pytest.mark.parametrize("value, message", [
    ("s3://bucket/clip.mp4", "unsupported video URI scheme 's3://'"),
    ("http://example.com/a.mp4", "unsupported video URI scheme 'http://'"),
    ("/no/such/clip.mp4", "video file not found"),
    ("not base64 !!", "neither an existing file nor base64"),
    ("abcde", "not valid base64"),
    ("", "missing 'video'"),
    (None, "missing 'video'"),
    (3, "'video' must be a string"),
])
def test_bad_video_field(value, message):
    with pytest.raises(ServingInputError, match=re.escape(message)):
        parse_requests([{"video": value}], LIMITS)


def test_size_limits(tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\x00" * 1001)
    with pytest.raises(ServingInputError, match="too large: 1001 bytes > 1000"):
        parse_requests([{"video": str(big)}], LIMITS)
    with pytest.raises(ServingInputError, match="too large"):
        parse_requests([{"video": base64.b64encode(b"\x00" * 2000).decode()}], LIMITS)


def test_paths_are_closed_by_default(clip, tmp_path):
    """A served model reads no server path unless the deployment names its roots (ACTIONCLIP_SERVING_VIDEO_ROOTS)."""
    default = ServingLimits()
    assert default.allow_paths is False and default.video_roots == () and not default.accepts_paths
    for video in ("/etc/passwd", str(clip), clip.as_uri()):
        with pytest.raises(ServingInputError, match="base64-encoded videos only") as err:
            parse_requests([{"video": video}], default)
        assert video not in str(err.value)
    rooted = default.with_env({"ACTIONCLIP_SERVING_VIDEO_ROOTS": str(tmp_path)})
    assert parse_requests([{"video": str(clip)}], rooted)
    with pytest.raises(ServingInputError, match="outside the allowed directories") as err:
        parse_requests([{"video": "/etc/passwd"}], rooted)
    assert "passwd" not in str(err.value)


def test_errors_never_echo_request_data(clip):
    marker = "ECHO-MARKER-" + "x" * 40
    rows = [{"video": marker + " !"}, {"video": str(clip), "labels": [marker, marker]}, {"video": str(clip), "top_k": 2.5},
            {"video": str(clip), marker: 1}, {"video": f"{marker}://x"}, {"video": f"/{marker}/clip.mp4"},
            {"video": str(clip), "templates": [marker]}]
    for row in rows:
        with pytest.raises(ServingInputError) as err:
            parse_requests([row], LIMITS)
        assert "ECHO-MARKER" not in str(err.value), (row, str(err.value))


def test_paths_can_be_disabled_or_confined(clip, tmp_path):
    no_paths = ServingLimits(allow_paths=False)
    with pytest.raises(ServingInputError, match="base64-encoded videos only"):
        parse_requests([{"video": str(clip)}], no_paths)
    confined = ServingLimits(video_roots=(str(tmp_path / "elsewhere"),))
    with pytest.raises(ServingInputError, match="outside the allowed directories"):
        parse_requests([{"video": str(clip)}], confined)
    assert parse_requests([{"video": str(clip)}], ServingLimits(video_roots=(str(tmp_path),)))


@pytest.mark.parametrize("row, message", [
    ({"labels": []}, "'labels' is empty"),
    ({"labels": ["a", "b", "c", "d"]}, "too many labels: 4 > 3"),
    ({"labels": "a"}, "must be a list of strings, not one string"),
    ({"labels": ["a", 1]}, "'labels' must be a list of strings"),
    ({"labels": ["a", "b", "a"]}, "duplicate label at position 2"),
    ({"labels": ["a", " "]}, "non-empty strings"),
    ({"templates": []}, "'templates' is empty"),
    ({"templates": ["a {}", "b {}", "c {}"]}, "too many templates: 3 > 2"),
    ({"templates": ["no placeholder"]}, "must contain exactly one '{}'"),
    ({"templates": ["{} and {}"]}, "must contain exactly one '{}'"),
    ({"templates": ["a {label}"]}, "must contain exactly one '{}'"),
    ({"top_k": 0}, "between 1 and 10"),
    ({"top_k": 11}, "between 1 and 10"),
    ({"top_k": 1.5}, "positive integer"),
    ({"top_k": True}, "positive integer"),
    ({"labelz": ["a"]}, "unknown field 'labelz'"),
])
def test_bad_rows(clip, row, message):
    with pytest.raises(ServingInputError, match=re.escape(message)):
        parse_requests([{"video": str(clip), **row}], LIMITS)


def test_batch_limits(clip):
    with pytest.raises(ServingInputError, match="too many videos in one request: 3 > 2"):
        parse_requests([{"video": str(clip)}] * 3, LIMITS)
    with pytest.raises(ServingInputError, match="no rows"):
        parse_requests([], LIMITS)
    with pytest.raises(ServingInputError, match="unsupported request type"):
        parse_requests("clip.mp4", LIMITS)


def test_group_by_text(clip):
    reqs = parse_requests([{"video": str(clip), "labels": ["a", "b"]}, {"video": str(clip)},
                           {"video": str(clip), "labels": ["a", "b"]}, {"video": str(clip), "labels": ["b", "a"]}],
                          ServingLimits(allow_paths=True))
    groups = group_by_text(reqs)
    assert list(groups.values()) == [[0, 2], [1], [3]]  # order matters: ["b", "a"] is a different label set


def test_template_check_accepts_spec_templates():
    import actionclip

    for t in actionclip.TEMPLATES:
        check_template(t)


def test_limits_from_config_and_env():
    lim = ServingLimits.from_mapping({"max_labels": 7, "int8": True, "unknown": 1})
    assert lim.max_labels == 7
    lim = lim.with_env({"ACTIONCLIP_SERVING_MAX_LABELS": "9", "ACTIONCLIP_SERVING_ALLOW_PATHS": "false",
                        "ACTIONCLIP_SERVING_VIDEO_ROOTS": "/a:/b"})
    assert (lim.max_labels, lim.allow_paths, lim.video_roots) == (9, False, ("/a", "/b"))
    with pytest.raises(ServingInputError, match="invalid serving limit max_labels='lots'"):
        ServingLimits().with_env({"ACTIONCLIP_SERVING_MAX_LABELS": "lots"})
    with pytest.raises(ServingInputError, match="invalid serving limit max_videos=0"):
        ServingLimits.from_mapping({"max_videos": 0})
    assert not math.isnan(ServingLimits().max_video_bytes)
