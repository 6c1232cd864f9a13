// A BlockDevice that shows a volume as its replayed journal leaves it:
// reads of a block the journal rewrote come from the journal copy (restoring
// the jbd2 magic of an escaped block), every other byte from the volume.
// It holds only the map (fs block -> journal offset), never block data.
#pragma once

#include <vector>

#include "readers/block/block_device.h"
#include "readers/fs/ext/jbd2_replay.h"

namespace sendense::ext {

// `copies` sorted by fs_block, one per block, each inside `volume`.
BlockDevicePtr make_journal_overlay(BlockDevicePtr volume, uint64_t block_size, std::vector<BlockCopy> copies);

}  // namespace sendense::ext
