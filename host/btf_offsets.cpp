#include "btf_offsets.h"

namespace tcptrace {

std::vector<ResolvedOffset> resolve_offsets(const std::vector<OffsetDeclaration>& wanted, const KernelBtf* btf,
                                            const std::string& no_btf) {
  std::vector<ResolvedOffset> resolved;
  for (const OffsetDeclaration& declaration : wanted) {
    ResolvedOffset r{declaration, std::nullopt, ""};
    if (btf == nullptr) {
      r.missing = "no kernel BTF: " + no_btf;
    } else if (auto offset = btf->member_offset(declaration.struct_name, declaration.member_path)) {
      r.offset = *offset;
    } else {
      r.missing = offset.error().message;
    }
    resolved.push_back(std::move(r));
  }
  return resolved;
}

std::string offset_macro(const std::string& name) { return "TCPTRACE_OFFSET_" + name; }

std::vector<std::string> offset_cflags(const std::vector<ResolvedOffset>& resolved) {
  std::vector<std::string> flags;
  for (const ResolvedOffset& r : resolved) {
    if (r.offset) flags.push_back("-D" + offset_macro(r.declaration.name) + "=" + std::to_string(*r.offset));
  }
  return flags;
}

}  // namespace tcptrace
