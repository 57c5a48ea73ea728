//! Fixture-driven tests: each directory under tests/fixtures/ is fed through
//! the transform and what it adds is compared with its expected.csv (format
//! in tests/common/mod.rs).
#![allow(clippy::unwrap_used)]

mod common;

use common::check_fixture;

#[test]
fn two_processes_with_3_to_1_cpu_time_split_dynamic_energy_3_to_1() {
    let run = check_fixture("two_processes_3_to_1");
    assert_eq!(run.stats.intervals_attributed, 4);
    assert_eq!(run.stats.intervals_unattributed, 0);
}

#[test]
fn a_first_point_carrying_energy_is_unattributed_with_its_reason_not_dropped() {
    let run = check_fixture("first_point_with_energy");
    assert_eq!(run.stats.energy_with_unknown_start, 1);
    assert_eq!(run.stats.intervals_attributed, 4);
}

#[test]
fn an_unmeasured_interval_is_attributed_from_the_estimate_alone() {
    let run = check_fixture("frozen_interval_left_to_the_estimate");
    assert_eq!(run.stats.intervals_unmeasured, 1);
}

#[test]
fn shared_static_energy_follows_the_same_shares() {
    check_fixture("two_processes_share_static");
}

#[test]
fn energy_at_100ms_is_aligned_with_cpu_time_at_1s_by_overlap() {
    let run = check_fixture("aligned_100ms_and_1s");
    assert_eq!(run.stats.intervals_attributed, 19);
    assert_eq!(run.stats.intervals_partially_covered, 0);
}

#[test]
fn a_process_that_exits_gets_energy_only_while_it_was_seen() {
    check_fixture("process_exits_mid_interval");
}

#[test]
fn wrapped_zero_nan_and_negative_energy_never_give_negative_attribution() {
    let run = check_fixture("counter_wrap_and_invalid_values");
    assert_eq!(run.stats.invalid_energy_values, 2);
    assert_eq!(run.stats.invalid_activity_values, 1);
    assert_eq!(run.stats.intervals_without_dynamic_energy, 1);
}

#[test]
fn late_points_are_placed_and_expired_intervals_resolved_with_what_is_known() {
    let run = check_fixture("late_and_expired_points");
    assert_eq!(run.stats.energy_points_too_late, 1);
    assert_eq!(run.stats.intervals_partially_covered, 1);
    assert_eq!(run.stats.intervals_unattributed, 3);
}

#[test]
fn idle_power_is_estimated_as_a_low_percentile_over_a_sliding_window() {
    let run = check_fixture("estimated_idle_power");
    assert_eq!(run.stats.intervals_without_dynamic_energy, 1);
}

#[test]
fn gpu_energy_is_shared_by_sm_utilisation() {
    check_fixture("gpu_by_sm_utilisation");
}

#[test]
fn cgroup_energy_goes_to_the_innermost_measured_cgroups_3_to_1() {
    check_fixture("cgroups_innermost_3_to_1");
}

#[test]
fn names_found_after_a_cgroups_first_points_reach_its_energy_from_then_on() {
    check_fixture("cgroups_names_found_late");
}

#[test]
fn gpu_energy_goes_to_the_cgroup_of_each_gpu_process() {
    check_fixture("gpu_by_cgroup");
}

#[test]
fn dies_of_one_package_are_domains_of_their_own() {
    let run = check_fixture("two_dies_one_package");
    assert_eq!(run.stats.energy_points_too_late, 0);
}

#[test]
fn estimated_cpu_energy_is_attributed_like_rapl_and_stays_marked_estimated() {
    let run = check_fixture("estimated_cpu_energy");
    assert_eq!(run.stats.intervals_attributed, 1);
}

#[test]
fn node_energy_is_split_3_to_1_by_cpu_time_and_its_idle_part_by_the_same_shares() {
    let run = check_fixture("node_two_processes_3_to_1");
    assert_eq!(run.stats.intervals_attributed, 2);
    assert_eq!(run.stats.energy_with_unknown_start, 1);
    assert_eq!(run.stats.intervals_unmeasured, 1);
}

#[test]
fn node_dynamic_energy_goes_by_gpu_use_for_the_gpus_part_and_by_cpu_time_for_the_rest() {
    let run = check_fixture("node_with_gpu");
    // 4 GPU intervals and 3 node intervals.
    assert_eq!(run.stats.intervals_attributed, 7);
}

#[test]
fn node_energy_is_left_alone_unless_attribute_node_is_set() {
    let run = check_fixture("node_off");
    assert!(run.added.is_empty());
}

#[test]
fn node_energy_reaches_the_cgroup_level_like_a_cpu_domain() {
    check_fixture("node_by_cgroup");
}
