# CLI test of `pipeweaver plan` and `pipeweaver suite` (run with cmake -P):
#  * plan --batch F --format json prints the documented keys, a lower bound below the step
#    time and exactly the requested iterations; --out/--trace/--svg write their files, and
#    `emulate` of the written plan reproduces plan's step time and peak memory;
#  * plan with an iteration budget is reproducible: two runs (2 threads) write identical plans;
#  * plan --split-backward --repack reports whether the plan splits and regroups, and a
#    sample_origin that names every sample of the batch exactly once; reproducible as well;
#  * suite --format json on a one-case suite reports dip never slower than a baseline that fits,
#    speedups >= 1 over every baseline that fits, dip / lower bound >= 1, dip / classic bound >=
#    dip / lower bound, best seed / searched >= 1, and each baseline's ceiling (baseline / lower
#    bound) >= 1 and >= dip's speedup over it; with --split-backward
#    --repack it says so, and dip still fits and is never slower.
# Variables: PIPEWEAVER (the tool), WORKLOADS (examples/workloads), BATCH (a batch file for
# tiny-vlm), WORK (a scratch directory).
cmake_minimum_required(VERSION 3.25)
include("${CMAKE_CURRENT_LIST_DIR}/cli_support.cmake")
require_variables(PIPEWEAVER WORKLOADS BATCH WORK)
fresh_work_dir()
set(model "${WORKLOADS}/models/tiny-vlm.json")
set(dataset "${WORKLOADS}/datasets/vlm-captions.json")
set(setup "${WORKLOADS}/setups/cpu-pp4.json")

# plan --batch, JSON, files.
run_ok(out plan --model "${model}" --setup "${setup}" --batch "${BATCH}" --iterations 2 --threads 2 --format json
       --out "${WORK}/a.plan.json" --trace "${WORK}/a.trace.json" --svg "${WORK}/a.svg")
foreach(key model setup source placement microbatches step_ms lower_bound_ms search_ms iterations peak_memory_gib fits_memory setup_ms)
  string(JSON v ERROR_VARIABLE e GET "${out}" ${key})
  if(e)
    message(FATAL_ERROR "plan JSON lacks ${key}: ${out}")
  endif()
endforeach()
string(JSON step GET "${out}" step_ms)
string(JSON lb GET "${out}" lower_bound_ms)
string(JSON it GET "${out}" iterations)
string(JSON mbs GET "${out}" microbatches)
string(JSON fits GET "${out}" fits_memory)
string(JSON gib GET "${out}" peak_memory_gib)
string(JSON setup_ms GET "${out}" setup_ms)
if(setup_ms LESS 0)
  message(FATAL_ERROR "plan: negative setup_ms ${setup_ms}")
endif()
if(lb GREATER step OR NOT it EQUAL 2 OR NOT mbs EQUAL 6 OR NOT fits)
  message(FATAL_ERROR "plan: step ${step} lower bound ${lb} iterations ${it} microbatches ${mbs} fits ${fits}")
endif()
foreach(f a.plan.json a.trace.json a.svg)
  if(NOT EXISTS "${WORK}/${f}")
    message(FATAL_ERROR "plan did not write ${f}")
  endif()
endforeach()
run_ok(emu emulate --plan "${WORK}/a.plan.json" --model "${model}" --setup "${setup}" --format json)
string(JSON emu_ms GET "${emu}" step_ms)
string(JSON emu_gib GET "${emu}" peak_memory_gib)
if(NOT emu_ms STREQUAL step OR NOT emu_gib STREQUAL gib)
  message(FATAL_ERROR "emulate of plan's output: ${emu_ms} ms / ${emu_gib} GiB, plan said ${step} ms / ${gib} GiB")
endif()

# Reproducible with an iteration budget.
run_ok(out2 plan --model "${model}" --setup "${setup}" --batch "${BATCH}" --iterations 2 --threads 2 --format json
       --out "${WORK}/b.plan.json")
file(SHA256 "${WORK}/a.plan.json" ha)
file(SHA256 "${WORK}/b.plan.json" hb)
if(NOT ha STREQUAL hb)
  message(FATAL_ERROR "two runs with --iterations 2 wrote different plans")
endif()

# plan --split-backward --repack: the mapping names every sample of the batch exactly once.
run_ok(sr plan --model "${model}" --setup "${setup}" --batch "${BATCH}" --iterations 2 --threads 2 --split-backward --repack --format json
       --out "${WORK}/c.plan.json")
foreach(key split_backward repacked sample_origin)
  string(JSON v ERROR_VARIABLE e GET "${sr}" ${key})
  if(e)
    message(FATAL_ERROR "plan --split-backward --repack JSON lacks ${key}: ${sr}")
  endif()
endforeach()
file(READ "${BATCH}" batch_json)
string(JSON given_mbs LENGTH "${batch_json}" microbatches)
string(JSON groups LENGTH "${sr}" sample_origin)
string(JSON sr_step GET "${sr}" step_ms)
if(NOT groups EQUAL given_mbs OR sr_step GREATER step)
  message(FATAL_ERROR "plan --split-backward --repack: ${groups} groups for ${given_mbs} microbatches, step ${sr_step} ms (plain ${step} ms)")
endif()
set(named "")
set(expected "")
math(EXPR last_mb "${given_mbs} - 1")
foreach(mb RANGE ${last_mb})
  string(JSON k LENGTH "${batch_json}" microbatches ${mb})
  math(EXPR last_s "${k} - 1")
  foreach(s RANGE ${last_s})
    list(APPEND expected "${mb}:${s}")
  endforeach()
  string(JSON k LENGTH "${sr}" sample_origin ${mb})
  math(EXPR last_s "${k} - 1")
  foreach(s RANGE ${last_s})
    string(JSON o_mb GET "${sr}" sample_origin ${mb} ${s} 0)
    string(JSON o_s GET "${sr}" sample_origin ${mb} ${s} 1)
    list(APPEND named "${o_mb}:${o_s}")
  endforeach()
endforeach()
list(SORT named)
list(SORT expected)
if(NOT named STREQUAL expected)
  message(FATAL_ERROR "plan --repack: sample_origin names ${named}, the batch holds ${expected}")
endif()
run_ok(sr2 plan --model "${model}" --setup "${setup}" --batch "${BATCH}" --iterations 2 --threads 2 --split-backward --repack --format json
       --out "${WORK}/d.plan.json")
file(SHA256 "${WORK}/c.plan.json" hc)
file(SHA256 "${WORK}/d.plan.json" hd)
string(JSON o1 GET "${sr}" sample_origin)
string(JSON o2 GET "${sr2}" sample_origin)
if(NOT hc STREQUAL hd OR NOT o1 STREQUAL o2)
  message(FATAL_ERROR "two runs with --split-backward --repack --iterations 2 gave different plans or mappings")
endif()

# plan --dataset, table.
run_ok(tab plan --model "${model}" --setup "${setup}" --dataset "${dataset}" --seed 3 --step 1 --budget-ms 200)
if(NOT tab MATCHES "step [0-9.]+ ms · lower bound [0-9.]+ ms")
  message(FATAL_ERROR "plan table: ${tab}")
endif()

# suite on a one-case suite.
file(WRITE "${WORK}/suite.json" "{\"name\": \"one\", \"cases\": [{\"name\": \"tiny\", \"model\": \"${model}\", \"dataset\": \"${dataset}\", \"setup\": \"${setup}\"}]}")
run_ok(sj suite --suite "${WORK}/suite.json" --steps 2 --seeds 1 --iterations 1 --format json)
string(JSON n LENGTH "${sj}" cases)
string(JSON never GET "${sj}" cases 0 dip_never_slower)
string(JSON fits GET "${sj}" cases 0 dip_fits_memory)
string(JSON steps GET "${sj}" cases 0 steps)
string(JSON r GET "${sj}" geomean dip_over_lower_bound)
if(NOT n EQUAL 1 OR NOT never OR NOT fits OR NOT steps EQUAL 2 OR r LESS 1)
  message(FATAL_ERROR "suite: ${sj}")
endif()
# The classic bound is at most the tight one, so dip / classic bound >= dip / tight bound; the
# search scores its seed orders first, so its plan is never slower than the best of them.
string(JSON rc GET "${sj}" geomean dip_over_classic_lower_bound)
string(JSON gain GET "${sj}" geomean seed_over_search)
if(rc LESS r OR gain LESS 1)
  message(FATAL_ERROR "suite: dip / classic bound ${rc} below dip / tight bound ${r}, or seed / search ${gain} below 1")
endif()
# dip's own partition's tight bound is valid for dip's plan and at least the smallest bound over
# every partition compared: 1 <= dip / own bound <= dip / bound.
string(JSON ro GET "${sj}" geomean dip_over_own_lower_bound)
if(ro LESS 1 OR ro GREATER r)
  message(FATAL_ERROR "suite: dip / own bound ${ro} below 1 or above dip / bound ${r}")
endif()
foreach(b gpipe 1f1b interleaved-1f1b megatron optimus zero-bubble)
  string(JSON s GET "${sj}" geomean speedup ${b})
  if(s LESS 1)
    message(FATAL_ERROR "suite: dip slower than ${b} (speedup ${s})")
  endif()
  # The ceiling (baseline / lower bound) bounds every plan's speedup, dip's included.
  string(JSON c GET "${sj}" geomean ceiling ${b})
  if(c LESS s OR c LESS 1)
    message(FATAL_ERROR "suite: ceiling over ${b} is ${c}, below the speedup ${s} or below 1")
  endif()
endforeach()
# With both options: flagged in the output, never slower than any baseline that fits.
run_ok(so suite --suite "${WORK}/suite.json" --steps 2 --seeds 1 --iterations 1 --split-backward --repack --format json)
string(JSON so_split GET "${so}" split_backward)
string(JSON so_repack GET "${so}" repack)
string(JSON so_never GET "${so}" cases 0 dip_never_slower)
string(JSON so_fits GET "${so}" cases 0 dip_fits_memory)
string(JSON so_splits GET "${so}" cases 0 split_plans)
string(JSON so_repacked GET "${so}" cases 0 repacked_plans)
if(NOT so_split OR NOT so_repack OR NOT so_never OR NOT so_fits OR so_splits LESS 0 OR so_repacked LESS 0)
  message(FATAL_ERROR "suite --split-backward --repack: ${so}")
endif()
run_ok(st suite --suite "${WORK}/suite.json" --steps 1 --seeds 1 --iterations 1)
if(NOT st MATCHES "geomean +[0-9.]+" OR NOT st MATCHES "ceiling: largest speedup")
  message(FATAL_ERROR "suite table: ${st}")
endif()
