// Which `databases:` entries can ever reach a database: cnp check refuses the others at their
// line, instead of an upload that warns "matches no database" or fails on a name CouchDB would
// not create.
#include "common/couchdb/target_databases.h"

#include "common/couchdb/database_name.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace cnp::couchdb {
namespace {

// A registry in _replicator or _users (a CLI probe: CouchDB's validation refused the writes,
// which read as a permissions problem) is refused before anything is asked of CouchDB.
TEST(RefuseSystemRegistry, ASystemDatabaseIsNoRegistry) {
  for (const char* system : {"_replicator", "_users", "_global_changes", "_anything"}) {
    const absl::Status refused = RefuseSystemRegistry(system);
    EXPECT_TRUE(absl::IsInvalidArgument(refused)) << system;
    EXPECT_NE(refused.message().find("one of CouchDB's system databases"),
              absl::string_view::npos)
        << refused.message();
  }
  EXPECT_TRUE(RefuseSystemRegistry("cnp_registry").ok());
  EXPECT_TRUE(RefuseSystemRegistry("a_registry").ok());
}

TEST(CanMatchADatabase, NamesFollowCouchDbsRule) {
  EXPECT_TRUE(CanMatchADatabase("accounts"));
  EXPECT_TRUE(CanMatchADatabase("a1_$()+-/b"));
  EXPECT_FALSE(CanMatchADatabase("5"));
  EXPECT_FALSE(CanMatchADatabase("Accounts"));
  EXPECT_FALSE(CanMatchADatabase("my db"));
  EXPECT_FALSE(CanMatchADatabase(""));
}

TEST(CanMatchADatabase, SystemNamesAreCouchDbsOwnOfAnyForm) {
  EXPECT_TRUE(CanMatchADatabase("_users"));
  EXPECT_TRUE(CanMatchADatabase("_*"));
}

TEST(CanMatchADatabase, PatternsAreJudgedByTheirLiteralCharacters) {
  EXPECT_TRUE(CanMatchADatabase("account-*"));
  EXPECT_TRUE(CanMatchADatabase("*"));
  EXPECT_TRUE(CanMatchADatabase("?x"));
  EXPECT_TRUE(CanMatchADatabase("\\a*"));  // an escaped letter is that letter
  EXPECT_FALSE(CanMatchADatabase("Account-*"));
  EXPECT_FALSE(CanMatchADatabase("5*"));
  EXPECT_FALSE(CanMatchADatabase("*.db"));
  EXPECT_FALSE(CanMatchADatabase("\\**"));  // a literal '*'
}

// A set, and all after it, is taken as able to match: fnmatch's sets ([[:digit:]], [^x],
// escapes in them) are not re-implemented here, and a pattern that matches is never refused.
TEST(CanMatchADatabase, SetsAreTakenAsAbleToMatch) {
  const std::vector<std::string> all_dbs = {"account-1", "abc", "xb", "xa", "x]"};
  for (const char* pattern : {"account-[[:digit:]]*", "[[:lower:]]*", "x[^]A]", "x[\\]a]",
                              "x[]A]", "x[!]A]", "[A-Z]*", "x[y"}) {
    EXPECT_TRUE(CanMatchADatabase(pattern)) << pattern;
  }
  // Each of these matches a database here: refusing it would break a working upload.
  for (const char* pattern : {"account-[[:digit:]]*", "[[:lower:]]*", "x[^]A]", "x[\\]a]"}) {
    EXPECT_FALSE(MatchDatabases(pattern, all_dbs).empty()) << pattern;
  }
}

// What CanMatchADatabase refuses, MatchDatabases never matches: its verdict is the matcher's.
TEST(CanMatchADatabase, AgreesWithTheMatcher) {
  const std::vector<std::string> all_dbs = {"account-1", "accounts", "a.db", "x[y", "**", "5"};
  for (const char* entry : {"Account-*", "5*", "*.db", "\\**"}) {
    EXPECT_FALSE(CanMatchADatabase(entry)) << entry;
    // Each matches only a name CouchDB would not have created.
    for (const std::string& matched : MatchDatabases(entry, all_dbs)) {
      EXPECT_FALSE(IsDatabaseName(matched)) << entry << " matched " << matched;
    }
  }
  EXPECT_EQ(MatchDatabases("account*", all_dbs), (std::vector<std::string>{"account-1", "accounts"}));
}

}  // namespace
}  // namespace cnp::couchdb
