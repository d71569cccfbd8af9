// The pipeweaver command-line tool. Exit status: 0 on success, 2 on bad input (a one-line
// error on stderr naming the file and the problem), 1 on an internal error.
#include <exception>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include <pipeweaver/core/error.hpp>

#include "cmd_compare.hpp"
#include "cmd_emulate.hpp"
#include "cmd_inspect.hpp"
#include "cmd_plan.hpp"
#include "cmd_run.hpp"
#include "cmd_sample.hpp"
#include "cmd_suite.hpp"

namespace {
/// Errors are printed on one line, whatever their text holds: control characters (line breaks
/// included) and bytes that are not UTF-8 are written as \xNN (pipeweaver::Error's what() is
/// already printable; CLI11's and the standard library's messages may echo raw arguments).
std::string one_line(const std::string& s) { return pipeweaver::printable_text(s); }
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pipeweaver: plans of dynamic interleaved pipeline schedules for multimodal training", "pipeweaver"};
  app.require_subcommand(1);
  pwcli::SampleOptions sample;
  pwcli::InspectOptions inspect;
  CLI::App* sample_cmd = pwcli::add_sample(app, sample);
  CLI::App* inspect_cmd = pwcli::add_inspect(app, inspect);
  pwcli::CompareArgs compare;
  pwcli::EmulateArgs emulate;
  CLI::App* compare_cmd = pwcli::add_compare(app, compare);
  CLI::App* emulate_cmd = pwcli::add_emulate(app, emulate);
  pwcli::PlanArgs plan;
  pwcli::SuiteArgs suite;
  CLI::App* plan_cmd = pwcli::add_plan(app, plan);
  CLI::App* suite_cmd = pwcli::add_suite(app, suite);
  pwcli::RunArgs run;
  CLI::App* run_cmd = pwcli::add_run(app, run);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "pipeweaver: error: " << one_line(e.what()) << " (run with --help for usage)\n";
    return 2;
  }
  try {
    if (sample_cmd->parsed()) return pwcli::run_sample(sample);
    if (inspect_cmd->parsed()) return pwcli::run_inspect(inspect);
    if (compare_cmd->parsed()) return pwcli::run_compare(compare);
    if (emulate_cmd->parsed()) return pwcli::run_emulate(emulate);
    if (plan_cmd->parsed()) return pwcli::run_plan(plan);
    if (suite_cmd->parsed()) return pwcli::run_suite(suite);
    if (run_cmd->parsed()) return pwcli::run_run(run);
    std::cerr << "pipeweaver: error: no subcommand\n";
    return 2;
  } catch (const pipeweaver::Error& e) {
    std::cerr << "pipeweaver: error: " << one_line(e.what()) << '\n';
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "pipeweaver: internal error: " << one_line(e.what()) << '\n';
    return 1;
  }
}
