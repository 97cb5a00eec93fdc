#include "kernel_btf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include "unique_fd.h"

namespace tcptrace {
namespace {

// include/uapi/linux/btf.h, spelled out so the reader does not depend on how
// new the installed uapi headers are (ENUM64 arrived in 6.0).
struct BtfHeader {
  uint16_t magic;
  uint8_t version;
  uint8_t flags;
  uint32_t hdr_len;
  uint32_t type_off;
  uint32_t type_len;
  uint32_t str_off;
  uint32_t str_len;
};

struct BtfType {
  uint32_t name_off;
  uint32_t info;  // vlen: bits 0-15, kind: bits 24-28, kind_flag: bit 31
  uint32_t size_or_type;
};

struct BtfMember {
  uint32_t name_off;
  uint32_t type;
  uint32_t offset;  // bits; with kind_flag: bitfield size in bits 24-31
};

constexpr uint16_t kBtfMagic = 0xeB9F;

enum Kind : uint32_t {
  kInt = 1, kPtr = 2, kArray = 3, kStruct = 4, kUnion = 5, kEnum = 6, kFwd = 7, kTypedef = 8,
  kVolatile = 9, kConst = 10, kRestrict = 11, kFunc = 12, kFuncProto = 13, kVar = 14, kDatasec = 15,
  kFloat = 16, kDeclTag = 17, kTypeTag = 18, kEnum64 = 19,
};

uint32_t kind_of(const BtfType& t) { return (t.info >> 24) & 0x1f; }
uint32_t vlen_of(const BtfType& t) { return t.info & 0xffff; }
bool kind_flag_of(const BtfType& t) { return (t.info >> 31) != 0; }

// Bytes that follow a type's common part, by kind; nullopt for a kind this
// reader does not know (a newer kernel): the section cannot be walked past it.
std::optional<size_t> trailing_bytes(const BtfType& t) {
  switch (kind_of(t)) {
    case kInt: case kVar: case kDeclTag: return 4;
    case kPtr: case kFwd: case kTypedef: case kVolatile: case kConst: case kRestrict: case kFunc:
    case kFloat: case kTypeTag: return 0;
    case kArray: return 12;
    case kStruct: case kUnion: case kDatasec: case kEnum64: return size_t{vlen_of(t)} * 12;
    case kEnum: case kFuncProto: return size_t{vlen_of(t)} * 8;
    default: return std::nullopt;
  }
}

}  // namespace

template <class T>
T KernelBtf::read_at(size_t offset) const {
  T value;
  std::memcpy(&value, data_ + offset, sizeof value);
  return value;
}

KernelBtf::KernelBtf(KernelBtf&& other) noexcept { *this = std::move(other); }

KernelBtf& KernelBtf::operator=(KernelBtf&& other) noexcept {
  if (this == &other) return *this;
  if (mapping_ != nullptr) ::munmap(mapping_, mapped_size_);
  owned_ = std::move(other.owned_);
  mapping_ = std::exchange(other.mapping_, nullptr);
  mapped_size_ = std::exchange(other.mapped_size_, 0);
  data_ = mapping_ != nullptr ? static_cast<const uint8_t*>(mapping_) : owned_.data();
  size_ = std::exchange(other.size_, 0);
  other.data_ = nullptr;
  types_begin_ = other.types_begin_;
  strings_begin_ = other.strings_begin_;
  strings_size_ = other.strings_size_;
  type_offsets_ = std::move(other.type_offsets_);
  return *this;
}

KernelBtf::~KernelBtf() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapped_size_);
}

Result<KernelBtf> KernelBtf::load(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return runtime_error("cannot read " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return runtime_error("cannot read " + path + ": " + std::strerror(errno));
  KernelBtf btf;
  const size_t size = static_cast<size_t>(st.st_size);
  // sysfs gives the BTF file its exact size; kernels before 6.16 cannot map it.
  void* mapping = size > 0 ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd.get(), 0) : MAP_FAILED;
  if (mapping != MAP_FAILED) {
    btf.mapping_ = mapping;
    btf.mapped_size_ = size;
    btf.data_ = static_cast<const uint8_t*>(mapping);
    btf.size_ = size;
  } else {
    std::vector<uint8_t> bytes;
    size_t used = 0;
    bytes.resize(size > 0 ? size : 8 << 20);
    while (true) {
      if (used == bytes.size()) bytes.resize(bytes.size() * 2);
      const ssize_t n = ::read(fd.get(), bytes.data() + used, bytes.size() - used);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return runtime_error("cannot read " + path + ": " + std::strerror(errno));
      if (n == 0) break;
      used += static_cast<size_t>(n);
    }
    bytes.resize(used);
    btf.owned_ = std::move(bytes);
    btf.data_ = btf.owned_.data();
    btf.size_ = btf.owned_.size();
  }
  if (Status s = btf.index(); !s) return runtime_error(path + ": " + s.error().message);
  return btf;
}

Result<KernelBtf> KernelBtf::from_bytes(std::vector<uint8_t> bytes) {
  KernelBtf btf;
  btf.owned_ = std::move(bytes);
  btf.data_ = btf.owned_.data();
  btf.size_ = btf.owned_.size();
  if (Status s = btf.index(); !s) return std::move(s).take_error();
  return btf;
}

Status KernelBtf::index() {
  if (size_ < sizeof(BtfHeader)) return runtime_error("not BTF (too short)");
  const auto header = read_at<BtfHeader>(0);
  if (header.magic != kBtfMagic) return runtime_error("not BTF (bad magic; a big-endian blob is not supported)");
  const uint64_t types_end = uint64_t{header.hdr_len} + header.type_off + header.type_len;
  const uint64_t strings_end = uint64_t{header.hdr_len} + header.str_off + header.str_len;
  if (header.hdr_len < sizeof(BtfHeader) || types_end > size_ || strings_end > size_) {
    return runtime_error("not BTF (sections outside the file)");
  }
  types_begin_ = header.hdr_len + header.type_off;
  strings_begin_ = header.hdr_len + header.str_off;
  strings_size_ = header.str_len;
  type_offsets_.clear();
  type_offsets_.reserve(header.type_len / sizeof(BtfType) + 1);  // at most; pages fault in as used
  type_offsets_.push_back(0);  // id 0: void
  size_t at = types_begin_;
  while (at < types_end) {
    if (at + sizeof(BtfType) > types_end) return runtime_error("truncated type section");
    const auto type = read_at<BtfType>(at);
    const std::optional<size_t> extra = trailing_bytes(type);
    if (!extra) {
      // Types are in id order, and members refer to earlier and later ids
      // alike: what was indexed so far may still answer, so stop here.
      break;
    }
    type_offsets_.push_back(static_cast<uint32_t>(at));
    at += sizeof(BtfType) + *extra;
  }
  return {};
}

std::string_view KernelBtf::name_at(uint32_t offset) const {
  if (offset >= strings_size_) return {};
  const char* start = reinterpret_cast<const char*>(data_ + strings_begin_ + offset);
  return std::string_view(start, strnlen(start, strings_size_ - offset));
}

uint32_t KernelBtf::resolve(uint32_t type_id) const {
  for (int depth = 0; depth < 32 && type_id != 0 && type_id < type_offsets_.size(); ++depth) {
    const auto type = read_at<BtfType>(type_offsets_[type_id]);
    switch (kind_of(type)) {
      case kTypedef: case kVolatile: case kConst: case kRestrict: case kTypeTag:
        type_id = type.size_or_type;
        continue;
      default:
        return type_id;
    }
  }
  return 0;
}

Result<uint32_t> KernelBtf::member_offset(std::string_view struct_name, std::string_view member_path) const {
  uint32_t type_id = 0;
  for (uint32_t id = 1; id < type_offsets_.size(); ++id) {
    const auto type = read_at<BtfType>(type_offsets_[id]);
    if (kind_of(type) == kStruct && name_at(type.name_off) == struct_name) {
      type_id = id;
      break;
    }
  }
  if (type_id == 0) return runtime_error("the kernel's BTF has no struct " + std::string(struct_name));

  // Finds `name` among the members of composite `id`, descending into
  // anonymous members; adds its bit offset to `bits`.
  auto find_member = [&](auto& self, uint32_t id, std::string_view name, uint64_t& bits,
                         uint32_t& member_type) -> bool {
    const size_t at = type_offsets_[id];
    const auto type = read_at<BtfType>(at);
    for (uint32_t i = 0; i < vlen_of(type); ++i) {
      const auto member = read_at<BtfMember>(at + sizeof(BtfType) + i * sizeof(BtfMember));
      const uint32_t bit_offset = kind_flag_of(type) ? member.offset & 0xffffff : member.offset;
      const uint32_t bitfield = kind_flag_of(type) ? member.offset >> 24 : 0;
      const std::string_view member_name = name_at(member.name_off);
      if (member_name == name) {
        if (bitfield != 0 || bit_offset % 8 != 0) return false;
        bits += bit_offset;
        member_type = member.type;
        return true;
      }
      if (member_name.empty()) {
        const uint32_t inner = resolve(member.type);
        if (inner == 0) continue;
        const auto inner_type = read_at<BtfType>(type_offsets_[inner]);
        if (kind_of(inner_type) != kStruct && kind_of(inner_type) != kUnion) continue;
        uint64_t inner_bits = bits + bit_offset;
        if (self(self, inner, name, inner_bits, member_type)) {
          bits = inner_bits;
          return true;
        }
      }
    }
    return false;
  };

  uint64_t bits = 0;
  std::string walked = "struct " + std::string(struct_name);
  size_t start = 0;
  while (start <= member_path.size()) {
    const size_t dot = member_path.find('.', start);
    const std::string_view part = member_path.substr(start, dot == std::string_view::npos ? std::string_view::npos
                                                                                          : dot - start);
    const auto type = read_at<BtfType>(type_offsets_[type_id]);
    if (kind_of(type) != kStruct && kind_of(type) != kUnion) {
      return runtime_error(walked + " is not a struct or union, so it has no member " + std::string(part));
    }
    uint32_t member_type = 0;
    if (!find_member(find_member, type_id, part, bits, member_type)) {
      return runtime_error(walked + " has no member " + std::string(part) + " at a whole byte");
    }
    walked += "." + std::string(part);
    if (dot == std::string_view::npos) break;
    type_id = resolve(member_type);
    if (type_id == 0) return runtime_error(walked + " has a type this reader cannot follow");
    start = dot + 1;
  }
  if (bits / 8 > UINT32_MAX) return runtime_error(walked + ": offset out of range");
  return static_cast<uint32_t>(bits / 8);
}

}  // namespace tcptrace
