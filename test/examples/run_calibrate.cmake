# CLI test of `pipeweaver run --true-slowdown 2 --calibrate` (run with cmake -P): tiny-vlm on the
# host backend whose stages take twice what the planner's model says, 8 steps. The JSON lists one
# calibration per step with α factors, and per step the cost-model version its plan was made
# with (0 for steps 0..2: they are searched before the first calibration, with lookahead 2; then
# higher). Over the steps planned with the initial model, emulated time is about half the
# measured one (below 0.65); over the calibrated ones, about all of it (0.55 to 1.45, and at
# least 1.4 times the initial ratio: wide, because a busy machine lengthens measured steps; the
# device-clock doctest of host calibration checks the 5 % convergence). Ratios only, with a time
# scale that makes stages last milliseconds; the table prints the calibration summary.
# Variables: PIPEWEAVER (the tool), WORKLOADS (examples/workloads).
cmake_minimum_required(VERSION 3.25)
include("${CMAKE_CURRENT_LIST_DIR}/cli_support.cmake")
require_variables(PIPEWEAVER WORKLOADS)
set(common --model "${WORKLOADS}/models/tiny-vlm.json" --setup "${WORKLOADS}/setups/cpu-pp4.json"
           --dataset "${WORKLOADS}/datasets/vlm-captions.json" --seed 3 --time-scale 0.5 --iterations 2
           --true-slowdown 2 --calibrate --grace-ms 30000)

run_ok(out run ${common} --steps 8 --format json)
string(JSON slowdown GET "${out}" true_slowdown)
string(JSON n LENGTH "${out}" calibration)
string(JSON nv LENGTH "${out}" cost_version)
if(NOT slowdown EQUAL 2 OR NOT n EQUAL 8 OR NOT nv EQUAL 8)
  message(FATAL_ERROR "run --calibrate JSON: true_slowdown ${slowdown}, ${n} calibrations, ${nv} cost versions: ${out}")
endif()
foreach(key after_step samples alpha_flops alpha_memory alpha_network rms_relative_error)
  string(JSON v ERROR_VARIABLE e GET "${out}" calibration 7 ${key})
  if(e)
    message(FATAL_ERROR "run --calibrate JSON: a calibration lacks ${key}: ${out}")
  endif()
endforeach()
string(JSON alpha GET "${out}" calibration 0 alpha_flops)
if(alpha EQUAL 1)
  message(FATAL_ERROR "run --calibrate: the first calibration left alpha_flops at 1: ${out}")
endif()
# Per step: the cost-model version; over each group of steps, the ratio of summed emulated to
# summed measured whole milliseconds (steps last about 150 to 300 ms), in integer arithmetic. A
# busy machine only lengthens measured steps, so the initial group's bound is one-sided and safe;
# the calibrated group's is wide.
set(sum_e_initial 0)
set(sum_m_initial 0)
set(sum_e_calibrated 0)
set(sum_m_calibrated 0)
foreach(i RANGE 7)
  string(JSON version GET "${out}" cost_version ${i})
  string(JSON measured GET "${out}" steps ${i} measured_ms)
  string(JSON emulated GET "${out}" steps ${i} emulated_ms)
  string(REGEX REPLACE "\\..*" "" m_int "${measured}")
  string(REGEX REPLACE "\\..*" "" e_int "${emulated}")
  if(i LESS 3)
    if(NOT version EQUAL 0)
      message(FATAL_ERROR "run --calibrate: step ${i} was planned with cost version ${version}, expected 0 (searched before the first calibration)")
    endif()
    math(EXPR sum_e_initial "${sum_e_initial} + ${e_int}")
    math(EXPR sum_m_initial "${sum_m_initial} + ${m_int}")
  else()
    if(version LESS 1)
      message(FATAL_ERROR "run --calibrate: step ${i} was planned with cost version ${version}, expected a calibrated one")
    endif()
    math(EXPR sum_e_calibrated "${sum_e_calibrated} + ${e_int}")
    math(EXPR sum_m_calibrated "${sum_m_calibrated} + ${m_int}")
  endif()
endforeach()
math(EXPR initial_pct "${sum_e_initial} * 100 / ${sum_m_initial}")
math(EXPR calibrated_pct "${sum_e_calibrated} * 100 / ${sum_m_calibrated}")
message(STATUS "emulated / measured: ${initial_pct} % over steps 0..2 (initial model), ${calibrated_pct} % over steps 3..7 (calibrated)")
math(EXPR initial_pct_x14 "${initial_pct} * 14 / 10")
if(NOT initial_pct LESS 65 OR calibrated_pct LESS 55 OR calibrated_pct GREATER 145 OR NOT calibrated_pct GREATER initial_pct_x14)
  message(FATAL_ERROR "run --calibrate: emulated / measured ${initial_pct} % before calibration (expected below 65 %), ${calibrated_pct} % after (expected 55 % to 145 %, and 1.4 x before): ${out}")
endif()

run_matching("stages take 2x the planner's model.*alpha after \\(f, m, n\\).*calibration: emulated vs measured [-+][0-9.]+ % over the 3 steps planned with the initial model"
             run ${common} --steps 4)
