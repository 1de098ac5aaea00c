# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""What the command-line tools share (as ``mmseg/utils``): argument parsing,
config loading and runner construction (:mod:`.cli`), start-up checks
(:mod:`.checks`), models built from configs for analysis (:mod:`.analysis`)
and the authors' model for comparisons (:mod:`.authors_wavemix`)."""
