// A disk's volumes: one per partition (extended containers excluded), or the
// whole disk when it has no partition table, each with its detected type.
#include "readers/common/error.h"
#include "readers/volume/volume.h"

namespace sendense {

namespace {

bool is_extended_container(const PartitionTable& t, const Partition& p) {
  return t.scheme == "mbr" && (p.type == "0x05" || p.type == "0x0f" || p.type == "0x85");
}

}  // namespace

DiskLayout discover_volumes(BlockDevicePtr disk) {
  if (!disk) throw Error(EINVAL, "discover_volumes: no disk");
  DiskLayout layout;
  layout.table = read_partition_table(*disk);

  if (layout.table.scheme == "none") {
    Volume v;
    v.name = "disk";
    v.length = disk->size();
    v.type = detect_filesystem(*disk);
    v.device = disk;
    layout.volumes.push_back(std::move(v));
    return layout;
  }

  for (const Partition& p : layout.table.partitions) {
    if (is_extended_container(layout.table, p)) continue;
    Volume v;
    v.name = "part" + std::to_string(p.number);
    v.partition = p.number;
    v.offset = p.offset;
    v.length = p.length;
    // read_partition_table checked that every partition fits the disk; a
    // failed read names the slice ("<disk> partN") by itself.
    v.device = make_slice(disk, p.offset, p.length, v.name);
    v.type = detect_filesystem(*v.device);
    layout.volumes.push_back(std::move(v));
  }
  return layout;
}

}  // namespace sendense
