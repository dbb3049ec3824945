"""The picture writers: contact sheets and atomic PNG/MP4 files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curriculum_ppo.errors import UserError
from curriculum_ppo.video import contact_sheet, write_mp4, write_png


def _tile(value: int) -> np.ndarray:
    return np.full((3, 5, 3), value, np.uint8)


def test_contact_sheet_rows_order_and_padding():
    sheet = contact_sheet([_tile(v) for v in (10, 20, 30, 40, 50)], columns=4)
    assert sheet.shape == (6, 20, 3)  # 2 rows of 4 tiles
    assert [int(sheet[0, 5 * i, 0]) for i in range(4)] == [10, 20, 30, 40]  # row-major order
    assert int(sheet[3, 0, 0]) == 50 and not sheet[3:, 5:].any()  # the last row padded with black
    assert contact_sheet([_tile(7), _tile(8)], columns=4).shape == (3, 10, 3)  # fewer tiles: one short row
    with pytest.raises(ValueError):
        contact_sheet([])


def test_png_and_mp4_round_trip_and_leave_no_temp_files(tmp_path):
    rgb = np.zeros((20, 32, 3), np.uint8)
    rgb[:, :, 0] = 200  # red in RGB
    write_png(tmp_path / "a.png", rgb)
    assert cv2.imread(str(tmp_path / "a.png"))[0, 0].tolist() == [0, 0, 200]  # BGR on disk
    assert write_mp4(tmp_path / "a.mp4", [rgb] * 5, fps=15) == 5
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    finally:
        cap.release()
    with pytest.raises(UserError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a.png"]
