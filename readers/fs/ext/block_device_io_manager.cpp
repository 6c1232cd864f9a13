#include "readers/fs/ext/block_device_io_manager.h"

#include <ext2fs/ext2fs.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string_view>
#include <unordered_map>

#include "readers/common/error.h"

namespace sendense::ext {

namespace {

constexpr std::string_view kNamePrefix = "sendense-bdev:";

// Devices waiting for ext2fs_open2 to open them, by key.
struct Registry {
  std::mutex mutex;
  uint64_t next_key = 1;
  std::unordered_map<uint64_t, BlockDevicePtr> devices;
};

Registry& registry() {
  static Registry r;
  return r;
}

BlockDevicePtr find_registered(const char* name) {
  std::string_view s(name);
  if (!s.starts_with(kNamePrefix)) return nullptr;
  s.remove_prefix(kNamePrefix.size());
  uint64_t key = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), key);
  if (ec != std::errc() || ptr != s.data() + s.size()) return nullptr;
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.devices.find(key);
  return it == r.devices.end() ? nullptr : it->second;
}

// What a channel keeps in private_data.
struct ChannelData {
  BlockDevicePtr device;
  struct_io_stats stats{};
};

ChannelData* data_of(io_channel channel) { return static_cast<ChannelData*>(channel->private_data); }

bool valid(io_channel channel) {
  return channel != nullptr && channel->magic == EXT2_ET_MAGIC_IO_CHANNEL && channel->private_data != nullptr;
}

errcode_t bd_open(const char* name, int flags, io_channel* out) {
  if (name == nullptr || out == nullptr) return EXT2_ET_BAD_DEVICE_NAME;
  if (flags & IO_FLAG_RW) return EROFS;
  BlockDevicePtr device = find_registered(name);
  if (!device) return EXT2_ET_BAD_DEVICE_NAME;

  auto* channel = new (std::nothrow) struct_io_channel{};
  auto* data = new (std::nothrow) ChannelData{};
  const size_t name_len = std::strlen(name);
  auto* name_copy = new (std::nothrow) char[name_len + 1];
  if (channel == nullptr || data == nullptr || name_copy == nullptr) {
    delete channel;
    delete data;
    delete[] name_copy;
    return EXT2_ET_NO_MEMORY;
  }
  std::memcpy(name_copy, name, name_len + 1);
  data->device = std::move(device);
  data->stats.num_fields = 2;

  channel->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  channel->manager = block_device_io_manager();
  channel->name = name_copy;
  channel->block_size = 1024;
  channel->refcount = 1;
  channel->private_data = data;
  *out = channel;
  return 0;
}

errcode_t bd_close(io_channel channel) {
  if (!valid(channel)) return EXT2_ET_MAGIC_IO_CHANNEL;
  if (--channel->refcount > 0) return 0;
  delete data_of(channel);
  delete[] channel->name;
  delete channel;
  return 0;
}

errcode_t bd_set_blksize(io_channel channel, int blksize) {
  if (!valid(channel)) return EXT2_ET_MAGIC_IO_CHANNEL;
  if (blksize <= 0 || blksize > EXT2_MAX_BLOCK_SIZE * 4) return EXT2_ET_INVALID_ARGUMENT;
  channel->block_size = blksize;
  return 0;
}

errcode_t bd_read_blk64(io_channel channel, unsigned long long block, int count, void* buf) {
  if (!valid(channel)) return EXT2_ET_MAGIC_IO_CHANNEL;
  ChannelData* data = data_of(channel);
  const uint64_t block_size = static_cast<uint64_t>(channel->block_size);
  // A negative count is a byte count (libext2fs convention).
  const uint64_t bytes = count < 0 ? static_cast<uint64_t>(-static_cast<int64_t>(count))
                                   : static_cast<uint64_t>(count) * block_size;
  auto* out = static_cast<std::byte*>(buf);
  if (bytes == 0) return 0;
  if (block > std::numeric_limits<uint64_t>::max() / block_size) {
    std::memset(out, 0, bytes);
    return EXT2_ET_SHORT_READ;
  }
  const uint64_t offset = block * block_size;
  const uint64_t device_size = data->device->size();
  const uint64_t available = offset >= device_size ? 0 : std::min(bytes, device_size - offset);
  errcode_t result = 0;
  try {
    if (available > 0) data->device->read_at(offset, std::span<std::byte>(out, available));
  } catch (const Error& e) {
    result = e.code() > 0 && e.code() < 256 ? e.code() : EIO;
  } catch (const std::bad_alloc&) {
    result = EXT2_ET_NO_MEMORY;
  } catch (...) {
    result = EIO;
  }
  if (result != 0) {
    std::memset(out, 0, bytes);
  } else if (available < bytes) {
    std::memset(out + available, 0, bytes - available);
    result = EXT2_ET_SHORT_READ;
  }
  if (result == 0) data->stats.bytes_read += bytes;
  if (result != 0 && channel->read_error != nullptr)
    return channel->read_error(channel, static_cast<unsigned long>(block), count, buf, bytes,
                               static_cast<int>(std::min<uint64_t>(available, INT32_MAX)), result);
  return result;
}

errcode_t bd_read_blk(io_channel channel, unsigned long block, int count, void* buf) {
  return bd_read_blk64(channel, block, count, buf);
}

errcode_t bd_write_blk(io_channel, unsigned long, int, const void*) { return EROFS; }
errcode_t bd_write_blk64(io_channel, unsigned long long, int, const void*) { return EROFS; }
errcode_t bd_write_byte(io_channel, unsigned long, int, const void*) { return EROFS; }
errcode_t bd_discard(io_channel, unsigned long long, unsigned long long) { return EROFS; }
errcode_t bd_zeroout(io_channel, unsigned long long, unsigned long long) { return EROFS; }

// Nothing is ever dirty.
errcode_t bd_flush(io_channel channel) { return valid(channel) ? 0 : EXT2_ET_MAGIC_IO_CHANNEL; }

errcode_t bd_set_option(io_channel channel, const char*, const char*) {
  return valid(channel) ? EXT2_ET_INVALID_ARGUMENT : EXT2_ET_MAGIC_IO_CHANNEL;
}

errcode_t bd_get_stats(io_channel channel, io_stats* stats) {
  if (!valid(channel)) return EXT2_ET_MAGIC_IO_CHANNEL;
  if (stats != nullptr) *stats = &data_of(channel)->stats;
  return 0;
}

errcode_t bd_cache_readahead(io_channel channel, unsigned long long, unsigned long long) {
  return valid(channel) ? EXT2_ET_OP_NOT_SUPPORTED : EXT2_ET_MAGIC_IO_CHANNEL;
}

struct_io_manager make_manager() {
  struct_io_manager m{};
  m.magic = EXT2_ET_MAGIC_IO_MANAGER;
  m.name = "sendense BlockDevice I/O manager";
  m.open = bd_open;
  m.close = bd_close;
  m.set_blksize = bd_set_blksize;
  m.read_blk = bd_read_blk;
  m.write_blk = bd_write_blk;
  m.flush = bd_flush;
  m.write_byte = bd_write_byte;
  m.set_option = bd_set_option;
  m.get_stats = bd_get_stats;
  m.read_blk64 = bd_read_blk64;
  m.write_blk64 = bd_write_blk64;
  m.discard = bd_discard;
  m.cache_readahead = bd_cache_readahead;
  m.zeroout = bd_zeroout;
  return m;
}

}  // namespace

io_manager block_device_io_manager() {
  static struct_io_manager manager = make_manager();
  return &manager;
}

DeviceRegistration::DeviceRegistration(BlockDevicePtr device) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  key_ = r.next_key++;
  r.devices.emplace(key_, std::move(device));
  name_ = std::string(kNamePrefix) + std::to_string(key_);
}

DeviceRegistration::~DeviceRegistration() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.devices.erase(key_);
}

}  // namespace sendense::ext
