// The rule cnp-worker calls functions by (service/worker/accepted_arguments.h, reduce_task.cc),
// as cnp check, cnp upload and cnp derive apply it to a function's declared parameters.
#include "common/function_parameters.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cnp {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

v1::ResolvedFunction::Parameters Declared(int positional, int required, bool varargs = false) {
  v1::ResolvedFunction::Parameters parameters;
  parameters.set_positional(positional);
  parameters.set_required(required);
  parameters.set_varargs(varargs);
  return parameters;
}

TEST(FunctionParametersTest, FewerParametersThanPassedAreGivenTheFirstOnes) {
  // couch-named-python's validate(new, old, userctx), filter(doc), show(doc).
  EXPECT_THAT(ParameterProblem(FunctionRole::kValidate, Declared(3, 3)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kValidate, Declared(1, 1)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kFilter, Declared(1, 1)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kShow, Declared(2, 2)), IsEmpty());
}

TEST(FunctionParametersTest, MoreParametersAreFineWithDefaultsOrStarArgs) {
  EXPECT_THAT(ParameterProblem(FunctionRole::kMap, Declared(3, 1)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kMap, Declared(0, 0, true)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kUpdate, Declared(5, 2)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kValidate, Declared(1, 1, true)), IsEmpty());
}

TEST(FunctionParametersTest, AReduceTakesKeysAndValuesOrAllThree) {
  EXPECT_THAT(ParameterProblem(FunctionRole::kReduce, Declared(2, 2)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kReduce, Declared(3, 2)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kReduce, Declared(1, 1)),
              HasSubstr("given 3 arguments (keys, values, rereduce), but it takes 1"));
  // Two with *args beside them are given all three, which they take.
  EXPECT_THAT(ParameterProblem(FunctionRole::kReduce, Declared(2, 2, true)), IsEmpty());
}

TEST(FunctionParametersTest, WhatNoCallCanGiveIsAProblem) {
  EXPECT_THAT(ParameterProblem(FunctionRole::kMap, Declared(2, 2)),
              HasSubstr("given 1 argument (the document), but it requires 2"));
  EXPECT_THAT(ParameterProblem(FunctionRole::kMap, Declared(0, 0)), HasSubstr("but it takes none"));
  // A function with no positional parameter is given everything, which it cannot take.
  EXPECT_THAT(ParameterProblem(FunctionRole::kValidate, Declared(0, 0)),
              HasSubstr("given 4 arguments"));
  EXPECT_THAT(ParameterProblem(FunctionRole::kFilter, Declared(3, 3)),
              HasSubstr("given 2 arguments (the document, the request), but it requires 3"));
  // Found by a README walkthrough: lists and rewrites were not checked, and one that could
  // never run was uploaded, its every request a render_error.
  EXPECT_THAT(ParameterProblem(FunctionRole::kList, Declared(5, 5)),
              HasSubstr("as a list function it is given 2 arguments (the head, the request), "
                        "but it requires 5"));
  EXPECT_THAT(ParameterProblem(FunctionRole::kList, Declared(1, 1)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kGeneratorList, Declared(3, 3)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kGeneratorList, Declared(4, 4)),
              HasSubstr("given 3 arguments (the head, the request, the rows), but it requires 4"));
  EXPECT_THAT(ParameterProblem(FunctionRole::kRewrite, Declared(1, 1)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kRewrite, Declared(2, 1)), IsEmpty());
  EXPECT_THAT(ParameterProblem(FunctionRole::kRewrite, Declared(2, 2)),
              HasSubstr("as a rewrite function it is given 1 argument (the request), but it "
                        "requires 2"));
  v1::ResolvedFunction::Parameters keyword = Declared(1, 1);
  keyword.add_keyword_only_required("town");
  keyword.add_keyword_only_required("year");
  EXPECT_THAT(ParameterProblem(FunctionRole::kMap, keyword),
              HasSubstr("keyword-only parameters without a default (town, year) are never given"));
}

}  // namespace
}  // namespace cnp
