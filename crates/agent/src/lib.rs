//! gpuwarden host agent: collects on a GPU host and pushes batches to `gpuwarden serve`.
