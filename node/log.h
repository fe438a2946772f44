// One line per event on stderr: "<time> <LEVEL> node=<id8> <message>".
#pragma once

#include <string>
#include <string_view>

namespace node::log {

enum class Level { debug, info, warn, error };
void set_level(Level level);
bool parse_level(std::string_view name, Level* out);
void set_node(std::string_view node_id_hex);
void write(Level level, std::string_view message);
inline void info(std::string_view m) { write(Level::info, m); }
inline void warn(std::string_view m) { write(Level::warn, m); }
inline void error(std::string_view m) { write(Level::error, m); }
inline void debug(std::string_view m) { write(Level::debug, m); }

}  // namespace node::log
