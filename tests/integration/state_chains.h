// Per-socket chains of `states` events, for the tests that read them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tcptrace::testing {

// Events grouped per socket, in arrival order. The kernel reuses a freed
// socket's memory for the next one, so a chain ends at its CLOSE and a later
// event at the same address starts a new socket.
inline std::vector<std::vector<nlohmann::json>> by_socket(const std::vector<nlohmann::json>& events) {
  std::vector<std::vector<nlohmann::json>> chains;
  std::map<std::string, size_t> open_chain;
  for (const nlohmann::json& e : events) {
    const std::string skaddr = e.at("skaddr").get<std::string>();
    auto it = open_chain.find(skaddr);
    if (it == open_chain.end()) {
      it = open_chain.emplace(skaddr, chains.size()).first;
      chains.emplace_back();
    }
    chains[it->second].push_back(e);
    if (e.at("newstate") == "CLOSE") open_chain.erase(it);
  }
  return chains;
}

}  // namespace tcptrace::testing
