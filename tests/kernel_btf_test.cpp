#include "kernel_btf.h"
#include "btf_offsets.h"
#include "owner_seed.h"
#include "program_annotations.h"

#include <bpf/btf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <tuple>
#include <string>
#include <vector>

namespace tcptrace {
namespace {

// Writes a raw BTF blob type by type, for layouts whose offsets the test
// states itself.
class BtfBuilder {
 public:
  BtfBuilder() { strings_.push_back('\0'); }
  uint32_t str(const std::string& s) {
    if (s.empty()) return 0;
    const auto at = static_cast<uint32_t>(strings_.size());
    strings_.insert(strings_.end(), s.begin(), s.end());
    strings_.push_back('\0');
    return at;
  }
  uint32_t add_int(const std::string& name, uint32_t bytes) {
    put_type(str(name), (1u << 24), bytes);
    put32(bytes * 8);  // encoding 0, offset 0, bits
    return ++count_;
  }
  uint32_t add_typedef(const std::string& name, uint32_t type) {
    put_type(str(name), (8u << 24), type);
    return ++count_;
  }
  uint32_t add_const(uint32_t type) {
    put_type(0, (10u << 24), type);
    return ++count_;
  }
  struct Member {
    std::string name;
    uint32_t type;
    uint32_t bit_offset;
    uint32_t bitfield_size = 0;
  };
  uint32_t add_composite(bool is_union, const std::string& name, uint32_t size, const std::vector<Member>& members) {
    bool kind_flag = false;
    for (const auto& m : members) kind_flag |= m.bitfield_size != 0;
    put_type(str(name), ((is_union ? 5u : 4u) << 24) | (kind_flag ? 1u << 31 : 0) | static_cast<uint32_t>(members.size()),
             size);
    for (const auto& m : members) {
      put32(str(m.name));
      put32(m.type);
      put32(kind_flag ? (m.bitfield_size << 24) | m.bit_offset : m.bit_offset);
    }
    return ++count_;
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out(24);
    const uint16_t magic = 0xeB9F;
    std::memcpy(out.data(), &magic, 2);
    out[2] = 1;
    const uint32_t header[] = {24, 0, static_cast<uint32_t>(types_.size()), static_cast<uint32_t>(types_.size()),
                               static_cast<uint32_t>(strings_.size())};
    std::memcpy(out.data() + 4, header, sizeof header);
    out.insert(out.end(), types_.begin(), types_.end());
    out.insert(out.end(), strings_.begin(), strings_.end());
    return out;
  }

 private:
  void put32(uint32_t v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    types_.insert(types_.end(), p, p + 4);
  }
  void put_type(uint32_t name, uint32_t info, uint32_t size_or_type) {
    put32(name);
    put32(info);
    put32(size_or_type);
  }
  std::vector<uint8_t> types_;
  std::vector<uint8_t> strings_;
  uint32_t count_ = 0;
};

// struct inner { int a; int b; };  typedef const struct inner inner_t;
// struct outer { int x; union { int y; struct { int z; int w; }; }; inner_t in; unsigned f:3; };
KernelBtf sample_btf() {
  BtfBuilder b;
  const uint32_t int_id = b.add_int("int", 4);
  const uint32_t inner = b.add_composite(false, "inner", 8, {{"a", int_id, 0}, {"b", int_id, 32}});
  const uint32_t inner_t = b.add_typedef("inner_t", b.add_const(inner));
  const uint32_t anon_struct = b.add_composite(false, "", 8, {{"z", int_id, 0}, {"w", int_id, 32}});
  const uint32_t anon_union = b.add_composite(true, "", 8, {{"y", int_id, 0}, {"", anon_struct, 0}});
  b.add_composite(false, "outer", 24,
                  {{"x", int_id, 0}, {"", anon_union, 32}, {"in", inner_t, 96}, {"f", int_id, 160, 3}});
  auto btf = KernelBtf::from_bytes(b.bytes());
  EXPECT_TRUE(btf.ok()) << btf.error().message;
  return std::move(btf).value();
}

uint32_t offset_ok(const KernelBtf& btf, const char* s, const char* path) {
  auto offset = btf.member_offset(s, path);
  EXPECT_TRUE(offset.ok()) << path << ": " << (offset.ok() ? "" : offset.error().message);
  return offset.ok() ? *offset : UINT32_MAX;
}

TEST(KernelBtf, OffsetsThroughAnonymousMembersAndTypedefs) {
  const KernelBtf btf = sample_btf();
  EXPECT_EQ(offset_ok(btf, "outer", "x"), 0u);
  EXPECT_EQ(offset_ok(btf, "outer", "y"), 4u);
  EXPECT_EQ(offset_ok(btf, "outer", "z"), 4u);
  EXPECT_EQ(offset_ok(btf, "outer", "w"), 8u);
  EXPECT_EQ(offset_ok(btf, "outer", "in"), 12u);
  EXPECT_EQ(offset_ok(btf, "outer", "in.b"), 16u);
  EXPECT_EQ(offset_ok(btf, "inner", "b"), 4u);
}

TEST(KernelBtf, ErrorsNameWhatIsMissing) {
  const KernelBtf btf = sample_btf();
  auto missing = btf.member_offset("outer", "in.c");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message, "struct outer.in has no member c at a whole byte");
  auto bitfield = btf.member_offset("outer", "f");
  ASSERT_FALSE(bitfield.ok());
  EXPECT_EQ(bitfield.error().message, "struct outer has no member f at a whole byte");
  auto scalar = btf.member_offset("outer", "x.y");
  ASSERT_FALSE(scalar.ok());
  EXPECT_EQ(scalar.error().message, "struct outer.x is not a struct or union, so it has no member y");
  auto no_struct = btf.member_offset("nothere", "x");
  ASSERT_FALSE(no_struct.ok());
  EXPECT_EQ(no_struct.error().message, "the kernel's BTF has no struct nothere");
}

TEST(KernelBtf, RejectsWhatIsNotBtf) {
  EXPECT_FALSE(KernelBtf::from_bytes({}).ok());
  EXPECT_FALSE(KernelBtf::from_bytes(std::vector<uint8_t>(64, 0)).ok());
  BtfBuilder b;
  b.add_int("int", 4);
  std::vector<uint8_t> truncated = b.bytes();
  truncated.resize(truncated.size() - 3);  // the string section runs past the end
  auto cut = KernelBtf::from_bytes(truncated);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.error().message, "not BTF (sections outside the file)");
  auto missing = KernelBtf::load("/nonexistent/vmlinux");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("cannot read /nonexistent/vmlinux"), std::string::npos);
}

// The running kernel's BTF, against libbpf's reading of the same file: the
// members the owner seeding reads (tcptrace_owner.h) and a uapi struct whose
// layout is fixed (struct iphdr: saddr and daddr sit in an anonymous
// union since Linux 5.18's struct_group).
TEST(KernelBtf, RunningKernelAgreesWithLibbpf) {
  if (access(KernelBtf::kVmlinuxPath, R_OK) != 0) GTEST_SKIP() << "this kernel has no BTF";
  auto ours = KernelBtf::load();
  ASSERT_TRUE(ours.ok()) << ours.error().message;
  struct btf* theirs = btf__parse_raw(KernelBtf::kVmlinuxPath);
  ASSERT_NE(theirs, nullptr);
  // libbpf's answer: walk one member path by hand, anonymous members included.
  auto libbpf_offset = [&](const char* name, std::vector<std::string> path) -> int64_t {
    int id = btf__find_by_name_kind(theirs, name, BTF_KIND_STRUCT);
    if (id < 0) return -1;
    int64_t bits = 0;
    for (const std::string& part : path) {
      std::function<bool(int, int64_t)> search = [&](int type_id, int64_t base) -> bool {
        const btf_type* t = btf__type_by_id(theirs, btf__resolve_type(theirs, type_id));
        const btf_member* m = btf_members(t);
        for (int i = 0; i < btf_vlen(t); ++i, ++m) {
          const char* member_name = btf__name_by_offset(theirs, m->name_off);
          if (part == member_name) {
            bits = base + btf_member_bit_offset(t, i);
            id = m->type;
            return true;
          }
          if (member_name[0] == '\0' && btf_is_composite(btf__type_by_id(theirs, btf__resolve_type(theirs, m->type))) &&
              search(m->type, base + btf_member_bit_offset(t, i))) {
            return true;
          }
        }
        return false;
      };
      if (!search(id, bits)) return -1;
    }
    return bits / 8;
  };
  const std::vector<std::tuple<const char*, const char*, std::vector<std::string>>> cases = {
      {"sock", "__sk_common.skc_net.net", {"__sk_common", "skc_net", "net"}},
      {"net", "ns.inum", {"ns", "inum"}},
      {"iphdr", "daddr", {"daddr"}},
      {"sock", "__sk_common.skc_cookie", {"__sk_common", "skc_cookie"}},
      // An skb's segment count, as a program reads it through tcptrace:offsets.
      {"sk_buff", "cb", {"cb"}},
      {"tcp_skb_cb", "tcp_gso_segs", {"tcp_gso_segs"}},
  };
  for (const auto& [name, path, parts] : cases) {
    const int64_t expected = libbpf_offset(name, parts);
    ASSERT_GE(expected, 0) << name << "." << path;
    EXPECT_EQ(offset_ok(*ours, name, path), static_cast<uint32_t>(expected)) << name << "." << path;
  }
  EXPECT_EQ(offset_ok(*ours, "iphdr", "daddr"), 16u);  // RFC 791
  // What states is compiled with to read a socket's network namespace.
  auto cflags = netns_offset_cflags(*ours);
  ASSERT_TRUE(cflags.ok()) << cflags.error().message;
  EXPECT_EQ(*cflags, (std::vector<std::string>{
                         "-DTCPTRACE_SOCK_NET_OFFSET=" + std::to_string(libbpf_offset("sock", {"__sk_common", "skc_net", "net"})),
                         "-DTCPTRACE_NET_INUM_OFFSET=" + std::to_string(libbpf_offset("net", {"ns", "inum"}))}));
  btf__free(theirs);
}

// tcptrace:offsets: each name becomes TCPTRACE_OFFSET_<NAME> where the
// kernel's BTF has the member, and stays undefined, with the reason, where
// it has not, or where there is no BTF at all.
TEST(BtfOffsets, DefinesWhatTheKernelHasAndSaysWhyNotTheRest) {
  auto annotations = parse_program_annotations(
      "/* tcptrace:offsets W=outer.w IN_B=outer.in.b\n"
      " * tcptrace:offsets GONE=outer.in.c BITS=outer.f NONE=nothere.x */\n");
  ASSERT_TRUE(annotations.ok()) << annotations.error().message;
  ASSERT_EQ(annotations->offsets.size(), 5u);
  EXPECT_EQ(annotations->offsets[1].name, "IN_B");
  EXPECT_EQ(annotations->offsets[1].struct_name, "outer");
  EXPECT_EQ(annotations->offsets[1].member_path, "in.b");
  const KernelBtf btf = sample_btf();
  const std::vector<ResolvedOffset> resolved = resolve_offsets(annotations->offsets, &btf, "");
  ASSERT_EQ(resolved.size(), 5u);
  EXPECT_EQ(resolved[0].offset, 8u);
  EXPECT_EQ(resolved[1].offset, 16u);
  EXPECT_FALSE(resolved[2].offset);
  EXPECT_EQ(resolved[2].missing, "struct outer.in has no member c at a whole byte");
  EXPECT_FALSE(resolved[3].offset) << "a bitfield has no byte offset";
  EXPECT_EQ(resolved[4].missing, "the kernel's BTF has no struct nothere");
  EXPECT_EQ(offset_cflags(resolved),
            (std::vector<std::string>{"-DTCPTRACE_OFFSET_W=8", "-DTCPTRACE_OFFSET_IN_B=16"}));
  const std::vector<ResolvedOffset> without = resolve_offsets(annotations->offsets, nullptr, "cannot read it");
  for (const ResolvedOffset& r : without) {
    EXPECT_FALSE(r.offset);
    EXPECT_EQ(r.missing, "no kernel BTF: cannot read it");
  }
  EXPECT_TRUE(offset_cflags(without).empty());
}

TEST(BtfOffsets, AnnotationMistakesAreNamedAtTheirLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"// tcptrace:offsets X", "line 1: tcptrace:offsets 'X': expected NAME=STRUCT.MEMBER"},
      {"// tcptrace:offsets X=sk_buff", "line 1: tcptrace:offsets 'X=sk_buff': expected NAME=STRUCT.MEMBER"},
      {"// tcptrace:offsets 1X=a.b", "line 1: tcptrace:offsets '1X=a.b': the name is not an identifier"},
      {"// tcptrace:offsets X=struct a.b", "line 1: tcptrace:offsets 'X=struct': expected NAME=STRUCT.MEMBER"},
      {"// tcptrace:offsets X=a-b.c", "line 1: tcptrace:offsets 'X=a-b.c': the struct name is not an identifier"},
      {"// tcptrace:offsets X=a.b..c", "line 1: tcptrace:offsets 'X=a.b..c': each member in the path must be an "
                                       "identifier"},
      {"// tcptrace:offsets X=a.b.", "line 1: tcptrace:offsets 'X=a.b.': each member in the path must be an "
                                     "identifier"},
      {"// tcptrace:offsets X=a.b\n// tcptrace:offsets X=c.d",
       "line 2: tcptrace:offsets 'X=c.d': the name X is given twice"},
  };
  for (const auto& [source, message] : cases) {
    auto parsed = parse_program_annotations(source);
    ASSERT_FALSE(parsed.ok()) << source;
    EXPECT_EQ(parsed.error().message, message) << source;
  }
}

}  // namespace
}  // namespace tcptrace
