// Decode + JSON serialisation throughput on samples recorded from real runs
// (bench/data/*.raw, written by `tcptrace-bcc --record-raw` during a
// loopback storm), decoded with the layout the programs' --check reported
// (bench/data/*.check.json) and the hints in programs/*.bpf.c: the same
// work the host does per event, on one core.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "event_decoder.h"
#include "event_layout.h"
#include "event_output.h"
#include "format_hints.h"
#include "wall_clock.h"

namespace {

using namespace tcptrace;

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

struct Recorded {
  EventDecoder decoder;
  std::vector<std::string> samples;
};

Recorded load(const std::string& program, const WallClock& clock) {
  const std::string root = TCPTRACE_SOURCE_DIR;
  const nlohmann::json check = nlohmann::json::parse(read_file(root + "/bench/data/" + program + ".check.json"));
  std::vector<std::string> descriptions;
  for (const auto& field : check.at("outputs").at(0).at("fields")) {
    descriptions.push_back(field.at("name").get<std::string>() + "#" + field.at("type").get<std::string>());
  }
  auto layout = parse_event_layout(descriptions);
  auto hints = parse_format_hints(read_file(root + "/programs/" + program + ".bpf.c"));
  if (!layout || !hints) throw std::runtime_error("bad layout or hints for " + program);
  auto decoder = EventDecoder::make(std::move(layout).value(), *hints, "events", DecoderOptions{}, clock);
  if (!decoder) throw std::runtime_error(decoder.error().message);
  Recorded recorded{std::move(decoder).value(), {}};
  const std::string raw = read_file(root + "/bench/data/" + program + ".raw");
  for (size_t at = 0; at + 8 <= raw.size();) {
    uint32_t header[2];
    std::memcpy(header, raw.data() + at, sizeof header);
    recorded.samples.push_back(raw.substr(at + 8, header[1]));
    at += 8 + header[1];
  }
  if (recorded.samples.empty()) throw std::runtime_error("no samples for " + program);
  return recorded;
}

// The decoder alone: one JSON line per sample into a reused buffer.
void decode(benchmark::State& state, const std::string& program) {
  const WallClock clock;
  const Recorded recorded = load(program, clock);
  std::string out;
  out.reserve(1 << 20);
  size_t i = 0;
  for (auto _ : state) {
    const std::string& sample = recorded.samples[i];
    recorded.decoder.append_json(out, sample.data(), sample.size());
    if (++i == recorded.samples.size()) i = 0;
    if (out.size() > (1 << 19)) out.clear();
  }
  state.SetItemsProcessed(state.iterations());
}

// The host's whole per-event path: the perf-buffer callback's sink, the
// shared buffer, and batched write()s (to /dev/null).
void sink_to_devnull(benchmark::State& state, const std::string& program) {
  const WallClock clock;
  Recorded recorded = load(program, clock);
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  StdoutWriter writer(devnull, std::nullopt);
  std::vector<std::optional<EventDecoder>> decoders;
  decoders.emplace_back(std::move(recorded.decoder));
  EventOutput sink(writer, std::move(decoders), {"events"});
  size_t i = 0;
  for (auto _ : state) {
    const std::string& sample = recorded.samples[i];
    sink.on_event(0, sample.data(), sample.size());
    if (++i == recorded.samples.size()) {
      i = 0;
      writer.flush();  // a poll batch ends
    }
  }
  writer.flush();
  ::close(devnull);
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK_CAPTURE(decode, states, std::string("states"));
BENCHMARK_CAPTURE(decode, connlat, std::string("connlat"));
BENCHMARK_CAPTURE(sink_to_devnull, states, std::string("states"));
BENCHMARK_CAPTURE(sink_to_devnull, connlat, std::string("connlat"));

}  // namespace

BENCHMARK_MAIN();
