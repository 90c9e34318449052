"""An NDI receiver in a process of its own (as another program would be): finds a source with
cyndilib's Finder, connects a Receiver and records each new frame its frame sync shows (NDI's own
buffering; cyndilib 0.1.3's queued capture path stopped delivering after a few frames here).

    python -m tests.ndi_probe NAME COUNT SECONDS    # prints JSON lines

It prints ``{"receiving": true}`` once the sender's warm-up frames (red top band) arrive, then one line
saying how the source was found ("discovery", or "address" when ``NDI_CONFIG_DIR`` points at a config
that lists 127.0.0.1 as an extra address to ask) and, for each later frame, its size and the mean of
each RGBA channel over the regions of the known test pattern.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def regions(image: np.ndarray) -> dict[str, list[float]]:
    """Channel means of the pattern's parts: the top band, the left and right halves below it."""
    height, width = image.shape[:2]
    band = height // 4
    inner = lambda part: part[2:-2, 2:-2].reshape(-1, 4).mean(axis=0).round(1).tolist()  # noqa: E731
    return {"top": inner(image[:band]), "left": inner(image[band:, :width // 2]),
            "right": inner(image[band:, width // 2:])}


def main(name: str, count: int, seconds: float) -> dict:
    from cyndilib.finder import Finder
    from cyndilib.receiver import Receiver
    from cyndilib.video_frame import VideoFrameSync
    from cyndilib.wrapper.ndi_recv import RecvBandwidth, RecvColorFormat

    how = "address" if os.environ.get("NDI_CONFIG_DIR") else "discovery"
    deadline = time.monotonic() + seconds
    with Finder() as finder:
        source = None
        while source is None and time.monotonic() < deadline:
            finder.wait_for_sources(0.5)
            found = [n for n in finder.get_source_names() if n.endswith(f"({name})")]
            source = finder.get_source(found[0]) if found else None
        if source is None:
            return {"how": how, "found": False, "sources": finder.get_source_names()}
        receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
        video = VideoFrameSync()
        receiver.frame_sync.set_video_frame(video)
        receiver.set_source(source)
        frames, said, last = [], False, None
        while len(frames) < count and time.monotonic() < deadline:
            time.sleep(0.005)  # well above the sender's rate: every frame is seen at least once
            receiver.frame_sync.capture_video()
            width, height = video.get_resolution()
            if not width:
                continue
            frame = {"size": [width, height], **regions(video.get_array().reshape(height, width, 4))}
            if frame == last:
                continue  # the same frame again
            last = frame
            if frame["top"][0] > 100:  # the sender's warm-up frames (red band) until we receive
                if not said:
                    print(json.dumps({"receiving": True}), flush=True)  # the sender starts its frames
                    said = True
                continue
            frames.append(frame)
        receiver.disconnect()
    return {"how": how, "found": True, "source": source.name, "frames": frames}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))), flush=True)
