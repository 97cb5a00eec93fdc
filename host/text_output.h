// --output text: event lines for people, as bcc's tools print them: a
// header of column names once, then one row per event in columns of fixed
// width. The row is made from the JSON line the decoder writes, so format
// hints (ip, tcp_state, errno, enum, optional) read the same in both forms.
//
// Column widths follow the field's type, not the values seen (rows are
// printed as they come): integers by size (u8 3, u16 5, u32 10, u64 16,
// one more when signed), char[N] N up to 32, booleans 5; by hint: ip 15
// (IPv4-sized field) or 26, hex 18, tcp_state 12, errno 12, enum its
// longest name; never narrower than the column's name. A longer value
// pushes the rest of its row right rather than being cut. Numbers are
// right-aligned, text left-aligned; a null (optional) prints as "-". The
// time column shows the time of day of "time" (HH:MM:SS.uuuuuu, UTC).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "event_layout.h"
#include "format_hints.h"

namespace tcptrace {

class TextColumns {
 public:
  // with_event: the JSON lines start with "event" (several tables);
  // with_time: they carry "time".
  static TextColumns make(const EventLayout& layout, const std::vector<FormatHint>& hints, const std::string& table,
                          bool with_event, bool with_time);

  // The column names, padded like the rows, and a newline.
  const std::string& header() const { return header_; }
  // Appends the row for one JSON line the table's decoder wrote.
  void append_row(std::string& out, std::string_view json_line) const;

  struct Column {
    std::string key;  // JSON key
    size_t width = 0;
    bool right = false;  // numbers
  };
  const std::vector<Column>& columns() const { return columns_; }

 private:
  std::vector<Column> columns_;
  std::string header_;
};

}  // namespace tcptrace
