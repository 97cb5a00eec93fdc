// Offsets of kernel struct members from the running kernel's BTF
// (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF), for programs that read a
// kernel object at an address a tracepoint record gives them. BCC compiles
// against whatever header tree is installed, which need not match the
// running kernel (this project's machine runs 6.18 with 6.1's headers, and
// `struct ns_common` moved `inum` from offset 16 to 24 between them); the
// kernel's own type information is exact.
//
// A small reader of the BTF format (include/uapi/linux/btf.h) rather than
// libbpf's btf__parse, which takes 42 ms here to read and validate the
// 5.5 MB of a 6.18 kernel's BTF, nearly all of it faulting in fresh heap
// pages. This reader maps the file where sysfs allows it (Linux 6.16+), so
// its pages come straight from the kernel's copy: 5 ms in all, index
// included; elsewhere it reads the file into a buffer of its size (26 ms
// for the read alone here, nearly all of it faulting in that buffer).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace tcptrace {

class KernelBtf {
 public:
  static constexpr const char* kVmlinuxPath = "/sys/kernel/btf/vmlinux";

  // Reads and indexes a raw BTF blob; a runtime error when the file cannot
  // be read or is not BTF.
  static Result<KernelBtf> load(const std::string& path = kVmlinuxPath);
  static Result<KernelBtf> from_bytes(std::vector<uint8_t> bytes);
  KernelBtf(KernelBtf&& other) noexcept;
  KernelBtf& operator=(KernelBtf&& other) noexcept;
  KernelBtf(const KernelBtf&) = delete;
  KernelBtf& operator=(const KernelBtf&) = delete;
  ~KernelBtf();

  // Byte offset of `member_path` ("a.b.c": members of members, looked up
  // through anonymous structs and unions as C does) inside `struct NAME`.
  // An error names the part that was not found, or a bitfield.
  Result<uint32_t> member_offset(std::string_view struct_name, std::string_view member_path) const;

 private:
  KernelBtf() = default;
  Status index();
  template <class T>
  T read_at(size_t offset) const;
  std::string_view name_at(uint32_t offset) const;
  // Follows typedefs and const/volatile/restrict/type tags.
  uint32_t resolve(uint32_t type_id) const;

  // The blob: either owned bytes or a mapping of mapped_size_ bytes.
  std::vector<uint8_t> owned_;
  void* mapping_ = nullptr;
  size_t mapped_size_ = 0;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t types_begin_ = 0;
  size_t strings_begin_ = 0;
  size_t strings_size_ = 0;
  std::vector<uint32_t> type_offsets_;  // by type id (id 0 is void), into bytes_
};

}  // namespace tcptrace
