#include "metrics_report.h"

#include <algorithm>
#include <cstdio>

#include "json_writer.h"

namespace tcptrace {
namespace {

std::string labels_text(const std::map<std::string, std::string>& labels) {
  std::string text;
  for (const auto& [name, value] : labels) text += (text.empty() ? "" : ",") + name + "=\"" + value + "\"";
  return "{" + text + "}";
}

// The heading of a histogram's value column, as bcc's tools name theirs.
std::string value_type(const MetricDeclaration& d) {
  if (d.unit == "ns") return "nsecs";
  if (d.unit == "us") return "usecs";
  if (d.unit == "ms") return "msecs";
  if (d.unit == "s") return "secs";
  if (d.unit == "bytes") return "bytes";
  return "value";
}

void append_number(std::string& out, double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  out += text;
}

}  // namespace

std::string bounded_histogram_text(const std::vector<uint64_t>& bounds, const std::vector<uint64_t>& counts,
                                   const std::string& value_type) {
  uint64_t most = 0;
  long last = -1;
  for (size_t i = 0; i < counts.size(); ++i) {
    most = std::max(most, counts[i]);
    if (counts[i] > 0) last = static_cast<long>(i);
  }
  if (last < 0) return "";
  constexpr int kStars = 40;
  std::string text;
  char line[256];
  std::snprintf(line, sizeof line, "     %-19s : count     distribution\n", value_type.c_str());
  text += line;
  for (long i = 0; i <= last; ++i) {
    const size_t b = static_cast<size_t>(i);
    const uint64_t low = b == 0 ? 0 : bounds[b - 1] + 1;
    const auto stars = static_cast<int>(std::min<unsigned __int128>(
        static_cast<unsigned __int128>(kStars) * counts[b] / most, kStars));
    const std::string bar(static_cast<size_t>(stars), '*');
    if (b < bounds.size()) {
      std::snprintf(line, sizeof line, "%10llu -> %-10llu : %-8llu |%-*s|\n", static_cast<unsigned long long>(low),
                    static_cast<unsigned long long>(bounds[b]), static_cast<unsigned long long>(counts[b]), kStars,
                    bar.c_str());
    } else {
      std::snprintf(line, sizeof line, "%10llu -> %-10s : %-8llu |%-*s|\n", static_cast<unsigned long long>(low),
                    "", static_cast<unsigned long long>(counts[b]), kStars, bar.c_str());
    }
    text += line;
  }
  return text;
}

std::string MetricsReport::render() {
  std::string out;
  std::map<std::string, std::vector<double>> now;
  for (const Metrics::MetricValues& metric : metrics_.declared_values()) {
    const MetricDeclaration& d = *metric.declaration;
    std::string json_series;
    std::string text;
    for (const Metrics::SeriesValues& series : metric.series) {
      const std::string key = d.name + labels_text(series.labels);
      std::vector<double> values;
      if (d.kind == MetricKind::counter) {
        values = {series.value};
      } else {
        values.assign(series.buckets.begin(), series.buckets.end());
        values.push_back(series.sum);
      }
      now[key] = values;
      // What grew since the previous report, unless the totals are wanted.
      // A series that went back (declared anew by --watch) starts afresh.
      if (!accumulate_) {
        const auto before = previous_.find(key);
        if (before != previous_.end() && before->second.size() == values.size()) {
          std::vector<double> grew = values;
          bool back = false;
          for (size_t i = 0; i < values.size(); ++i) {
            grew[i] -= before->second[i];
            back |= grew[i] < 0;
          }
          if (!back) values = grew;
        }
      }
      double observed = 0;
      if (d.kind == MetricKind::counter) {
        observed = values[0];
      } else {
        for (size_t i = 0; i + 1 < values.size(); ++i) observed += values[i];
      }
      if (observed == 0) continue;
      if (text_) {
        if (d.kind == MetricKind::counter) {
          char value[32];
          std::snprintf(value, sizeof value, "%.17g", values[0]);
          text += d.name + (series.labels.empty() ? "" : labels_text(series.labels)) + " " + value + "\n";
        } else {
          std::vector<uint64_t> counts;
          for (size_t i = 0; i + 1 < values.size(); ++i) counts.push_back(static_cast<uint64_t>(values[i]));
          text += "\n" + d.name + (series.labels.empty() ? "" : " " + labels_text(series.labels)) + "\n" +
                  bounded_histogram_text(d.bounds, counts, value_type(d));
        }
        continue;
      }
      std::string entry = "{\"labels\":{";
      bool first = true;
      for (const auto& [name, value] : series.labels) {
        if (!first) entry += ",";
        first = false;
        json::append_string(entry, name);
        entry += ":";
        json::append_string(entry, value);
      }
      entry += "}";
      if (d.kind == MetricKind::counter) {
        entry += ",\"value\":";
        append_number(entry, values[0]);
      } else {
        entry += ",\"count\":";
        append_number(entry, observed);
        entry += ",\"sum\":";
        append_number(entry, values.back());
        entry += ",\"buckets\":[";
        for (size_t i = 0; i + 1 < values.size(); ++i) {
          if (i > 0) entry += ",";
          entry += "{\"low\":";
          json::append_uint(entry, i == 0 ? 0 : d.bounds[i - 1] + 1);
          entry += ",\"high\":";
          if (i < d.bounds.size()) {
            json::append_uint(entry, d.bounds[i]);
          } else {
            entry += "null";
          }
          entry += ",\"count\":";
          append_number(entry, values[i]);
          entry += "}";
        }
        entry += "]";
      }
      entry += "}";
      json_series += (json_series.empty() ? "" : ",") + entry;
    }
    if (text_) {
      out += text;
    } else if (!json_series.empty()) {
      out += "{\"event\":";
      json::append_string(out, d.name);
      out += ",\"time\":";
      clock_.append_rfc3339_now(out);
      if (d.kind == MetricKind::histogram) {
        out += ",\"unit\":";
        json::append_string(out, d.unit);
      }
      out += ",\"series\":[" + json_series + "]}\n";
    }
  }
  previous_ = std::move(now);
  return out;
}

}  // namespace tcptrace
