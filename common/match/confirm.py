"""Stage 3, verification: is a candidate the same photo as the query? PDQ first (cheap, confirms
most whole-photo edits), ORB keypoints + RANSAC with a plausible geometry for the rest (crops, pads,
rotations, mild perspective), then the photometric check of the aligned thumbnails for the few ORB
passes. The query's mirrored and restored-backdrop views are tried like the query itself.
common.match.pairs runs the same on pairs of indexed products (neardup dedup)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

import cv2
import numpy as np

from common.match import photometric, verify
from common.match.presets import FIXED, Rule
from common.signals import signal_set as sig

log = logging.getLogger(__name__)

Blobs = Callable[[str, list[str]], list[bytes | None]]
# What confirmed a match, signal by signal (a match's "signals" in a detailed result): distances and
# counts ({"pdq": 12, "orb_inliers": 31}), agreement ({"photo": 0.93}), view flags ({"mirrored": True}).
Evidence = dict[str, int | float | bool]
_Later = Callable[[], "bytes | None"]  # a query signature made on first use (common.signals.lazy)
_T = TypeVar("_T")
_LOW_QUALITY = FIXED.pdq_min_quality  # below it (flat images) PDQ agreement is not evidence


def _pdq_distance(a: bytes, b: bytes) -> int:
    # Python ints: 0.7 us a pair against 4.5 us through numpy (a query compares dozens of pairs)
    return (int.from_bytes(a[:32], "big") ^ int.from_bytes(b[:32], "big")).bit_count()


def _pdq_confirms(
    q_pdq: bytes | None, t_pdq: bytes | None, rule: Rule, limit: int | None = None
) -> Evidence | None:
    if q_pdq is None or t_pdq is None or len(t_pdq) != 33 or len(q_pdq) != 33:
        return None  # missing, or damaged: never evidence
    d = _pdq_distance(q_pdq, t_pdq)
    informative = min(q_pdq[32], t_pdq[32]) >= _LOW_QUALITY
    return {"pdq": d} if d <= (rule.pdq_max if limit is None else limit) and informative else None


@contextlib.contextmanager
def _skip_damaged(what: str) -> Iterator[None]:
    """A stored blob that does not unpack (damaged, foreign) is no evidence: skip that candidate,
    leave a trace, and answer the query from the others."""
    try:
        yield
    except (ValueError, IndexError, TypeError, cv2.error) as exc:
        log.warning("skipping %s: damaged signature blob (%s: %s)", what, type(exc).__name__, exc)


def _pdq_flat_close(q_pdq: bytes | None, t_pdq: bytes | None, rule: Rule) -> bool:
    """PDQ within rule.pdq_flat_max where either photo is low-information (not evidence alone)."""
    if q_pdq is None or t_pdq is None or len(t_pdq) != 33 or len(q_pdq) != 33:
        return False
    return min(q_pdq[32], t_pdq[32]) < _LOW_QUALITY and _pdq_distance(q_pdq, t_pdq) <= rule.pdq_flat_max


def _same_frame(qsize: tuple[int, int], tsize: tuple[int, int]) -> verify.Verdict:
    """The transform of two framings of one photo (PDQ agrees): scale each axis to the other's size."""
    model = np.array([[tsize[0] / qsize[0], 0.0, 0.0], [0.0, tsize[1] / qsize[1], 0.0]])
    return verify.Verdict(0, 0, True, model)


def _mirrored_thumb(thumb: photometric.Thumb | None) -> photometric.Thumb | None:
    if thumb is None:
        return None
    luma, chroma = thumb.luma[:, ::-1], thumb.chroma[:, ::-1]
    return photometric.Thumb(np.ascontiguousarray(luma), np.ascontiguousarray(chroma))


@dataclass
class _View:
    """One way of looking at the query: straight, mirrored, on a restored studio backdrop, or the
    photo alone inside a screenshot-like frame.
    Blobs are unpacked on first use: most queries never need a thumbnail or the mirror's keypoints."""

    name: str  # "" for the straight view; else the flag a match by it carries in its signals
    pdq: bytes | None
    orb: bytes | _Later | None
    thumb_blob: bytes | _Later | None
    fine_blob: bytes | _Later | None
    rows: set[int] | None  # candidates whose ORB it may verify (None: all)
    pdq_max: int | None = None
    flip: bool = False  # the thumbnails are the straight query's, mirrored on use
    # May refit any candidate whose earlier view's keypoints passed but whose colours did not (not only
    # its own rows): a replaced backdrop changes the colours the straight fit is judged on.
    refit_any: bool = False
    _cache: dict[str, object] = field(default_factory=dict)

    def _get(self, key: str, make: Callable[[], _T]) -> _T:
        if key not in self._cache:
            self._cache[key] = make()
        return cast(_T, self._cache[key])  # each key is always made by the same `make`

    def features(self) -> verify.Features:
        return self._get("orb", lambda: verify.unpack(_keypoints(self.orb)))

    def _thumb(self, blob: bytes | _Later | None) -> photometric.Thumb | None:
        blob = _made(blob)
        thumb = photometric.unpack_thumb(blob) if blob is not None else None
        return _mirrored_thumb(thumb) if self.flip else thumb

    def thumb(self) -> photometric.Thumb | None:
        return self._get("thumb", lambda: self._thumb(self.thumb_blob))

    def fine(self) -> photometric.Thumb | None:
        return self._get("fine", lambda: self._thumb(self.fine_blob))


def _later(query: dict[str, bytes], key: str) -> _Later | None:
    """The query's `key`, read (and so made) only when a candidate needs it; None when it has none."""
    return (lambda: query.get(key)) if key in query else None


class QueryViewError(RuntimeError):
    """Making one of the query's own views failed: the query's fault, never a candidate's (a
    RuntimeError, so _skip_damaged does not take it for a damaged stored blob)."""


def _made(blob: bytes | _Later | None) -> bytes | None:
    if not callable(blob):
        return blob
    try:
        return blob()
    except Exception as exc:
        raise QueryViewError(f"making a view of the query failed: {type(exc).__name__}: {exc}") from exc


def _keypoints(blob: bytes | _Later | None) -> bytes:
    made = _made(blob)
    assert made is not None  # asked only of views that carry keypoints
    return made


def _views(query: dict[str, bytes], rule: Rule, alt_rows: dict[str, set[int]]) -> list[_View]:
    thumb, fine = _later(query, sig.THUMB), _later(query, sig.THUMB_FINE)
    views = [_View("", query.get(sig.PDQ), query.get(sig.ORB), thumb, fine, None)]
    if sig.PDQ_MIRROR_KEY in query or sig.ORB_MIRROR in query:
        # ORB is not flip-invariant, and trying the mirror on every candidate would double the ORB
        # cost: its keypoints only for the candidates the mirrored views brought.
        mirrored = alt_rows.get("mirrored", set())
        views.append(
            _View("mirrored", query.get(sig.PDQ_MIRROR_KEY), _later(query, sig.ORB_MIRROR), thumb, fine,
                  mirrored, rule.pdq_mirror_max, flip=True)
        )  # fmt: skip
    if sig.ORB_BACKDROP in query:
        rows = alt_rows.get("backdrop", set())
        views.append(
            _View(
                "backdrop",
                query.get(sig.PDQ_BACKDROP),
                _later(query, sig.ORB_BACKDROP),
                _later(query, sig.THUMB_BACKDROP),
                None,
                rows,
                rule.pdq_backdrop_max,
                refit_any=True,
            )
        )
    if sig.PDQ_FRAME in query:  # the photo inside a screenshot-like frame: its PDQ alone (ORB: the query's)
        views.append(_View("frame", query.get(sig.PDQ_FRAME), None, None, None, set()))
    if sig.PDQ_ROTATED in query:  # a query turned by a few degrees, turned back: its PDQ alone
        views.append(_View("rotated", query.get(sig.PDQ_ROTATED), None, None, None, set()))
    return views


def verify_candidates(
    query: dict[str, bytes],
    ids: list[str],
    rows: list[int],
    rule: Rule,
    blobs: Blobs,
    alt_rows: dict[str, set[int]] | None = None,
) -> dict[int, tuple[str, Evidence]]:
    """Stage 3 for the candidates: PDQ first (cheap, confirms most), ORB + RANSAC for the rest, then
    the photometric check of the aligned thumbnails for the few ORB passes."""
    if not ids:
        return {}
    views = _views(query, rule, alt_rows or {})
    stored: list[bytes | None] = blobs(sig.PDQ, ids) if views[0].pdq else [None] * len(ids)
    found, pending, flat = _pdq_stage(views, stored, rows, rule)
    if not pending or views[0].orb is None:
        return found
    passed = _orb_stage(views, pending, blobs(sig.ORB, [ids[i] for i in pending]), ids, rows, rule, flat)
    # Thumbnails only for the few ORB passes: one more bulk fetch, none when nothing passed.
    wanted = passed and views[0].thumb_blob is not None
    thumbs = blobs(sig.THUMB, [ids[i] for i, _, _, _ in passed]) if wanted else []
    found.update(_photo_stage(views, passed, thumbs, ids, rows, rule))
    return found


def _pdq_stage(
    views: list[_View], stored: list[bytes | None], rows: list[int], rule: Rule
) -> tuple[dict[int, tuple[str, Evidence]], list[int], dict[int, _View]]:
    """(confirmed by PDQ, indexes left for ORB, flat ones among those: index -> the view to judge).
    Low-information photos (flat, dark, blurred) whose PDQ is very close: ORB finds too few corners
    there, so the photometric check on the thumbnails decides instead."""
    found: dict[int, tuple[str, Evidence]] = {}
    pending: list[int] = []
    flat: dict[int, _View] = {}
    for i, blob in enumerate(stored):
        for view in views:
            extra = _pdq_confirms(view.pdq, blob, rule, view.pdq_max)
            if extra is not None:
                found[rows[i]] = ("pdq", {**extra, view.name: True} if view.name else extra)
                break
        else:
            pending.append(i)
            for view in views[:2]:  # straight or mirrored: the same photo, so the same framing
                if _pdq_flat_close(view.pdq, blob, rule):
                    flat.setdefault(i, view)
    return found, pending, flat


def _orb_stage(
    views: list[_View],
    pending: list[int],
    orb_blobs: list[bytes | None],
    ids: list[str],
    rows: list[int],
    rule: Rule,
    flat: dict[int, _View],
) -> list[tuple[int, bytes, verify.Verdict, _View]]:
    """The candidates whose keypoints agree with some view's (or flat ones, for the thumbnails)."""
    passed: list[tuple[int, bytes, verify.Verdict, _View]] = []
    for i, blob in zip(pending, orb_blobs, strict=True):
        if blob is None:
            continue
        with _skip_damaged(ids[i]):
            t_feat = verify.unpack(blob)
            for view in views:
                if view.orb is None or (view.rows is not None and rows[i] not in view.rows):
                    continue
                verdict = verify.verify(view.features(), t_feat, min_inliers=rule.orb_min_inliers)
                if verdict.passes(rule.orb_min_inliers):
                    passed.append((i, blob, verdict, view))
                    break
            else:
                if i in flat:
                    passed.append((i, blob, _same_frame(views[0].features().size, t_feat.size), flat[i]))
    return passed


def _photo_stage(
    views: list[_View],
    passed: list[tuple[int, bytes, verify.Verdict, _View]],
    thumbs: list[bytes | None],
    ids: list[str],
    rows: list[int],
    rule: Rule,
) -> dict[int, tuple[str, Evidence]]:
    """ORB passes (and flat photos) that the aligned thumbnails also agree on. When the view whose
    keypoints passed fails here, the later views (the restored backdrop after the straight one) get
    their own fit and check: a garment on a replaced backdrop is aligned by the straight view but
    only its restored view's colours agree. The backdrop view refits any such candidate, not only
    those its own hashes brought."""
    found: dict[int, tuple[str, Evidence]] = {}
    for k, (i, blob, verdict, view) in enumerate(passed):
        t_thumb = thumbs[k] if thumbs else None
        by_photo = not verdict.passes(rule.orb_min_inliers)  # a flat photo: the thumbnails decide
        if by_photo and t_thumb is None:
            continue
        with _skip_damaged(ids[i]):
            extra = _photo_confirms(views, view, verdict, blob, t_thumb, rule)
            if extra is None and not by_photo and t_thumb is not None:
                t_feat = verify.unpack(blob)
                for later in views[views.index(view) + 1 :]:
                    mine = later.rows is None or rows[i] in later.rows or later.refit_any
                    if later.orb is None or not mine:
                        continue
                    again = verify.verify(later.features(), t_feat, min_inliers=rule.orb_min_inliers)
                    if again.passes(rule.orb_min_inliers):
                        extra = _photo_confirms(views, later, again, blob, t_thumb, rule)
                        if extra is not None:
                            break
            if extra is not None:
                found[rows[i]] = ("pdq+photo" if by_photo else "orb", extra)
    return found


def _photo_confirms(
    views: list[_View], view: _View, verdict: verify.Verdict, blob: bytes, t_thumb: bytes | None, rule: Rule
) -> Evidence | None:
    """The evidence of one ORB fit (or flat photo) whose aligned thumbnails agree, else None."""
    extra: Evidence = {"orb_inliers": verdict.inliers, "orb_matches": verdict.good}
    if t_thumb is not None and view.thumb_blob is not None:
        q_thumb = view.thumb()
        # a thumbnail blob unpacks to a thumbnail; every verdict here carries its transform
        assert q_thumb is not None and verdict.model is not None
        photo = photometric.photometric(
            q_thumb,
            photometric.unpack_thumb(t_thumb),
            verdict.model,
            views[0].features().size,
            verify.unpack_size(blob),
            fine=view.fine(),
        )
        # Six degrees of freedom fit chance matches more easily: the pixels must agree more.
        if not photo.passes(rule.photo_min_affine if verdict.affine else rule.photo_min):
            return None
        extra.update(photo=round(photo.luma, 3), chroma=round(photo.chroma_corr, 3))
    if view.name:
        extra[view.name] = True
    return extra
