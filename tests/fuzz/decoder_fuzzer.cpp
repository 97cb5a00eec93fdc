// libFuzzer target for the decoder and the JSON writer: random struct
// layouts, random format hints and random sample bytes (shorter, equal or
// longer than the struct) must always give either no line or exactly one
// line that parses as one JSON object, and must never read out of bounds
// (built with AddressSanitizer).
//
// Input: byte 0 = number of fields; then per field 3 bytes (type, array
// length, hint: its top bit adds "optional"); the rest is the sample.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "event_decoder.h"
#include "event_layout.h"
#include "format_hints.h"
#include "json_writer.h"
#include "wall_clock.h"

namespace {

constexpr const char* kTypes[] = {
    "u8",   "u16",  "u32",   "u64",      "s8",     "s16",         "s32",  "s64",
    "char", "bool", "void *", "unsigned __int128", "__int128", "unsigned char", "int", "enum e",
};
constexpr const char* kHints[] = {"", "hex", "tcp_state", "errno", "enum(a,b,c)", "string", "ip(f0)", "ip"};

void check_one_object(const std::string& out, size_t before) {
  const std::string line = out.substr(before);
  if (line.empty() || line.back() != '\n' || line.find('\n') != line.size() - 1) std::abort();
  const nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tcptrace;
  // The JSON writer alone, on the raw bytes.
  {
    std::string out;
    json::append_string(out, std::string_view(reinterpret_cast<const char*>(data), size));
    const nlohmann::json parsed = nlohmann::json::parse(out, nullptr, false);
    if (parsed.is_discarded() || !parsed.is_string()) std::abort();
  }
  if (size < 1) return 0;
  const size_t fields = data[0] % 12 + 1;
  if (size < 1 + fields * 3) return 0;
  std::vector<std::string> descriptions;
  std::string hints = "// tcptrace:format";
  for (size_t i = 0; i < fields; ++i) {
    const uint8_t* f = data + 1 + i * 3;
    std::string name = "f" + std::to_string(i);
    std::string type = kTypes[f[0] % (sizeof kTypes / sizeof *kTypes)];
    const size_t length = f[1] % 20;
    if (length > 1) type += "[" + std::to_string(length) + "]";
    descriptions.push_back(name + "#" + type);
    const char* hint = kHints[f[2] % (sizeof kHints / sizeof *kHints)];
    if (*hint) hints += " " + name + "=" + hint;
    if (f[2] & 0x80) hints += " " + name + "=optional";  // a modifier on top of any kind
  }
  const uint8_t* sample = data + 1 + fields * 3;
  const size_t sample_size = size - 1 - fields * 3;

  auto layout = parse_event_layout(descriptions);
  if (!layout) return 0;
  auto parsed_hints = parse_format_hints(hints);
  if (!parsed_hints) return 0;
  static const WallClock clock(1'700'000'000'000'000'000LL);
  DecoderOptions options;
  options.add_time = (data[0] & 0x80) != 0;
  options.event_name = (data[0] & 0x40) ? "events" : "";
  auto decoder = EventDecoder::make(std::move(layout).value(), *parsed_hints, "events", options, clock);
  if (!decoder) return 0;  // hints that do not fit the field are rejected up front
  // Copy into an exact-size heap block so ASan catches any over-read.
  std::vector<uint8_t> exact(sample, sample + sample_size);
  std::string out = "prefix";
  const size_t before = out.size();
  if (decoder->append_json(out, exact.data(), exact.size())) {
    check_one_object(out, before);
    // The decoder writes through a raw pointer into the room it reserved.
    if (out.size() - before > decoder->max_line_chars()) std::abort();
  } else if (out.size() != before || exact.size() >= decoder->layout().size) {
    std::abort();  // refused a complete sample, or wrote while refusing
  }
  return 0;
}
