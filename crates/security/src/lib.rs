//! gpuwarden's security detections (work in progress).
