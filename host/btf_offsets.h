// The member offsets a program asks for with tcptrace:offsets
// (program_annotations.h), from the running kernel's BTF (kernel_btf.h), as
// the macros TCPTRACE_OFFSET_<NAME> handed to BCC. One the kernel cannot
// give is left undefined, with the reason kept for --check.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernel_btf.h"
#include "program_annotations.h"

namespace tcptrace {

struct ResolvedOffset {
  OffsetDeclaration declaration;
  std::optional<uint32_t> offset;  // nullopt: the macro is not defined
  std::string missing;             // why not
};

// `btf` is nullptr when the kernel's BTF could not be read; `no_btf` then
// says why.
std::vector<ResolvedOffset> resolve_offsets(const std::vector<OffsetDeclaration>& wanted, const KernelBtf* btf,
                                            const std::string& no_btf);

// "TCPTRACE_OFFSET_" + name.
std::string offset_macro(const std::string& name);

// -DTCPTRACE_OFFSET_<NAME>=N for each offset found.
std::vector<std::string> offset_cflags(const std::vector<ResolvedOffset>& resolved);

}  // namespace tcptrace
