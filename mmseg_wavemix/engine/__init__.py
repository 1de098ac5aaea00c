# Copyright (c) mmseg_wavemix contributors. All rights reserved.
