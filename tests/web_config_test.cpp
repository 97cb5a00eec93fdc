// --web-config files: what each key sets, every mistake as one usage error
// naming the file, line and key, and bcrypt checks through libcrypt.
#include "web_config.h"

#include <crypt.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "integration/temp_dir.h"

namespace tcptrace {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// A bcrypt hash made by libcrypt itself: `prefix` "$2b$" or "$2y$", cost 4
// (the lowest, so the tests stay fast; verification reads the cost from
// the hash).
std::string hash_of(const std::string& password, const char* prefix = "$2b$", unsigned long cost = 4) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn(prefix, cost, nullptr, 0, setting, sizeof setting) == nullptr) return "";
  crypt_data data{};
  const char* hash = crypt_rn(password.c_str(), setting, &data, sizeof data);
  return hash == nullptr ? "" : hash;
}

struct ConfigFile {
  TempDir dir{"tcptrace-web-config"};
  fs::path path;
  explicit ConfigFile(const std::string& text) : path(dir.path() / "web.yml") { std::ofstream(path) << text; }
  void add(const std::string& name, const std::string& text = "x\n") const { std::ofstream(dir.path() / name) << text; }
};

// The error of loading `text`, or "" when it loads.
std::string error_of(const ConfigFile& file) {
  auto config = load_web_config(file.path.string());
  if (config) return "";
  EXPECT_EQ(config.error().exit_code, ExitCode::usage) << config.error().message;
  return config.error().message;
}

TEST(WebConfig, EmptyFileConfiguresNothing) {
  ConfigFile file("# nothing yet\n");
  auto config = load_web_config(file.path.string());
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_FALSE(config->tls);
  EXPECT_FALSE(config->needs_auth());
}

TEST(WebConfig, RelativeTlsFilesAreFoundBesideTheConfigFile) {
  ConfigFile file("tls_server_config:\n  cert_file: cert.pem\n  key_file: keys/key.pem\n");
  file.add("cert.pem");
  fs::create_directory(file.dir.path() / "keys");
  file.add("keys/key.pem");
  // From another working directory: the paths still resolve beside the file.
  const fs::path cwd = fs::current_path();
  fs::current_path("/");
  auto config = load_web_config(file.path.string());
  fs::current_path(cwd);
  ASSERT_TRUE(config) << config.error().message;
  ASSERT_TRUE(config->tls);
  EXPECT_EQ(config->tls->cert_file, (file.dir.path() / "cert.pem").string());
  EXPECT_EQ(config->tls->key_file, (file.dir.path() / "keys" / "key.pem").string());

  ConfigFile absolute("tls_server_config:\n  cert_file: " + (file.dir.path() / "cert.pem").string() +
                      "\n  key_file: " + (file.dir.path() / "keys/key.pem").string() + "\n");
  auto from_absolute = load_web_config(absolute.path.string());
  ASSERT_TRUE(from_absolute) << from_absolute.error().message;
  EXPECT_EQ(from_absolute->tls->cert_file, config->tls->cert_file);
}

TEST(WebConfig, UnknownKeysAreErrorsNamingTheKeyAndLine) {
  const ConfigFile top("basic_auth_user:\n  alice: x\n");
  EXPECT_EQ(error_of(top), "--web-config " + top.path.string() + ":1: unknown key 'basic_auth_user'");
  const ConfigFile nested("tls_server_config:\n  cert_file: c.pem\n  key_flie: k.pem\n");
  EXPECT_EQ(error_of(nested), "--web-config " + nested.path.string() + ":3: unknown key 'tls_server_config.key_flie'");
}

TEST(WebConfig, ExporterToolkitKeysThisToolDoesNotServeAreNamedAsSuch) {
  const ConfigFile file("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n");
  EXPECT_EQ(error_of(file), "--web-config " + file.path.string() +
                                ":4: 'tls_server_config.client_ca_file' is not supported by tcptrace-bcc (it serves "
                                "tls_server_config.cert_file, tls_server_config.key_file and basic_auth_users)");
  const ConfigFile http("http_server_config:\n  http2: false\n");
  EXPECT_NE(error_of(http).find("'http_server_config' is not supported"), std::string::npos);
}

TEST(WebConfig, TlsNeedsBothFilesAndTheyMustExist) {
  const ConfigFile no_key("tls_server_config:\n  cert_file: cert.pem\n");
  no_key.add("cert.pem");
  EXPECT_EQ(error_of(no_key), "--web-config " + no_key.path.string() + ":2: 'tls_server_config' needs 'key_file'");
  const ConfigFile missing("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n");
  missing.add("cert.pem");
  EXPECT_EQ(error_of(missing), "--web-config " + missing.path.string() + ":3: 'tls_server_config.key_file': '" +
                                   (missing.dir.path() / "key.pem").string() + "' does not exist");
  const ConfigFile directory("tls_server_config:\n  cert_file: .\n  key_file: key.pem\n");
  EXPECT_NE(error_of(directory).find("is not a file"), std::string::npos);
}

TEST(WebConfig, UsersNeedBcryptHashes) {
  for (const std::string& hash : {std::string("secret"), hash_of("pw", "$6$"), hash_of("pw").substr(0, 59)}) {
    const ConfigFile file("basic_auth_users:\n  alice: '" + hash + "'\n");
    EXPECT_EQ(error_of(file), "--web-config " + file.path.string() +
                                  ":2: 'basic_auth_users.alice' is not a bcrypt hash ($2a$, $2b$ or $2y$, cost, "
                                  "salt and digest: 60 characters)")
        << hash;
  }
  const ConfigFile colon("basic_auth_users:\n  'a:b': '" + hash_of("pw") + "'\n");
  EXPECT_NE(error_of(colon).find("contains ':'"), std::string::npos);
  const ConfigFile list("basic_auth_users:\n  - alice\n");
  EXPECT_NE(error_of(list).find("'basic_auth_users' must map user names to bcrypt hashes"), std::string::npos);
}

TEST(WebConfig, FilesThatAreNotThereOrNotYamlAreUsageErrors) {
  ConfigFile file("tls_server_config: [unclosed\n");
  EXPECT_EQ(error_of(file).rfind("--web-config " + file.path.string() + ":", 0), 0u);
  EXPECT_NE(error_of(file).find("not YAML"), std::string::npos);
  auto missing = load_web_config((file.dir.path() / "nothing.yml").string());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().exit_code, ExitCode::usage);
  EXPECT_EQ(missing.error().message, "--web-config: '" + (file.dir.path() / "nothing.yml").string() + "' does not exist");
  auto directory = load_web_config(file.dir.path().string());
  ASSERT_FALSE(directory);
  EXPECT_EQ(directory.error().message, "--web-config: '" + file.dir.path().string() + "' is a directory");
}

TEST(WebConfig, VerifiesPasswordsAgainstTheUsersBcryptHash) {
  const std::string alice = hash_of("correct horse");
  const std::string bob = hash_of("battery staple", "$2y$");
  ASSERT_EQ(alice.size(), 60u);
  ASSERT_EQ(bob.rfind("$2y$04$", 0), 0u) << bob;
  const ConfigFile file("basic_auth_users:\n  alice: '" + alice + "'\n  bob: " + bob + "\n");
  auto config = load_web_config(file.path.string());
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_TRUE(config->needs_auth());
  EXPECT_TRUE(config->verify("alice", "correct horse"));
  EXPECT_TRUE(config->verify("bob", "battery staple"));
  EXPECT_FALSE(config->verify("alice", "battery staple")) << "another user's password";
  EXPECT_FALSE(config->verify("alice", "correct hors"));
  EXPECT_FALSE(config->verify("alice", "correct horse "));
  EXPECT_FALSE(config->verify("alice", ""));
  EXPECT_FALSE(config->verify("alice", std::string("correct horse\0x", 15)));
  EXPECT_FALSE(config->verify("carol", "correct horse")) << "an unknown user";
  EXPECT_FALSE(config->verify("", ""));
}

// The README's example file: its hash is the password it names.
TEST(WebConfig, ReadmeExampleHashIsChangeMe) {
  std::ifstream readme(std::string(TCPTRACE_SOURCE_DIR) + "/README.md");
  std::string line, users;
  bool in_users = false;
  while (std::getline(readme, line)) {
    if (line.find("    basic_auth_users:") == 0) in_users = true;
    if (in_users && line.find("      prometheus: ") == 0) {
      users = "basic_auth_users:\n" + line.substr(4) + "\n";
      break;
    }
  }
  ASSERT_FALSE(users.empty()) << "README.md has the example web.yml";
  const ConfigFile file(users);
  auto config = load_web_config(file.path.string());
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_TRUE(config->verify("prometheus", "change-me"));
}

}  // namespace
}  // namespace tcptrace
