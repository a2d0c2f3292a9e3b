"""The published paired comparisons of RESULTS.md and README.md recomputed with the test case as the unit
(2026-12-05), from the archived per-case scores under ``benchmarks/results/``; prints a Markdown table.

Until 2026-12-05 the tables pooled every (case, class, seed) difference as an independent sample (n = 240 for 40
hippocampus test cases x 2 classes x 3 seeds); the two classes of a case and one case under several seeds are not
independent, so those p-values and intervals were too confident. Here each comparison is also recomputed the old way
(the "pooled" column reproduces the published figure, which shows the files are the ones it came from), then per test
case with ``heldout.case_differences``: one difference per case (the mean over its classes and the seeds both sides
have), a 95 % bootstrap interval resampling cases, the sign test over cases, and each seed's mean difference.

    python benchmarks/paired_by_case.py
"""
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402

R = str(Path(__file__).resolve().parent / "results") + "/"
H = "hippocampus/"


def load(spec):
    return {s: heldout.read_scores(R + p) for s, p in spec.items()}


def seeds(prefix, ss, suffix=""):
    return {s: f"{prefix}_s{s}{suffix}.csv" for s in ss}


def one(path):  # a single model (an ensemble file, a shipped model) as "seed 0"
    return {0: path}


def summary(diffs):
    """Mean, 95 % bootstrap interval, better / worse counts and sign test p of paired differences."""
    lo, hi = heldout.bootstrap_ci(diffs)
    return dict(n=len(diffs), mean=float(np.mean(diffs)), lo=lo, hi=hi, better=sum(x > 0 for x in diffs),
                worse=sum(x < 0 for x in diffs), p=heldout.sign_test_p(diffs))


def pooled(run, ref):
    """As first published: every (case, class, seed) difference a sample."""
    diffs = [v["dice"] - ref[s][k]["dice"] for s, scores in run.items() if s in ref for k, v in scores.items()
             if k in ref[s] and not math.isnan(v["dice"]) and not math.isnan(ref[s][k]["dice"])]
    return summary(diffs)


def per_case(run, ref):
    """The test case as the unit (``heldout.case_differences``), with each seed's mean difference."""
    by_case, by_seed = heldout.case_differences(run, ref)
    return dict(summary(list(by_case.values())), per_seed=by_seed)


#: the comparisons: (what, where in RESULTS.md / README.md at commit 52e2130, as published, run, reference)
C = []


def add(tag, line, published, run, ref):
    C.append((tag, line, published, run, ref))

# ---- README claims
add("1 LA sgrs n11 3000it vs supervised, raw", "RESULTS 842 / README 433",
    "+0.028 [+0.014,+0.045], p=1.9e-05, 28/32",
    seeds("la_sgrs_n11/la/sgrs_l16_none", [1, 2]), seeds("la_sgrs_n11/la/supervised_l16_none", [1, 2]))
add("1b LA sgrs n11 vs supervised, keep-largest", "RESULTS 844",
    "+0.025 [+0.011,+0.042], p=1.9e-05",
    seeds("la_sgrs_n11/la/sgrs_l16_none", [1, 2], "_keep-largest"),
    seeds("la_sgrs_n11/la/supervised_l16_none", [1, 2], "_keep-largest"))
add("2a hip supervised perturb both vs none", "RESULTS 962 / README 278,437",
    "+0.012 [+0.008,+0.017], 154/240, p=1.3e-05 (README: [+0.007,+0.017])",
    seeds("perturb_both/hippocampus/supervised_l20_none", [1, 2, 3]),
    seeds("perturb_none/hippocampus/supervised_l20_none", [1, 2, 3]))
add("2b hip supervised perturb spatial vs none", "RESULTS 961",
    "+0.012 [+0.007,+0.017], 152/240, p=4.3e-05",
    seeds("perturb_spatial/hippocampus/supervised_l20_none", [1, 2, 3]),
    seeds("perturb_none/hippocampus/supervised_l20_none", [1, 2, 3]))
SGRS2000 = {1: "hip_sgrs_ship/hippocampus/sgrs_l20_none_s1.csv",
            2: "hip_sgrs_sbnet/hippocampus/sgrs_l20_none_s2.csv",
            3: "hip_sgrs_sbnet/hippocampus/sgrs_l20_none_s3.csv"}
SUPB = seeds("perturb_both/hippocampus/supervised_l20_none", [1, 2, 3])
add("3 hip sgrs 2000it vs supervised (both)", "RESULTS 1168,1206 / README 439",
    "+0.007 [+0.004,+0.009], 151/240, p=7.6e-05", SGRS2000, SUPB)
add("4 ensemble n8c48 sgrs5 (fp32) vs shipped sgrs n8, confirm", "RESULTS 1386 / README 442",
    "+0.009 [+0.003,+0.015], 27/40",
    one("confirm/hippocampus/n8c48_sgrs5_ensemble.csv"), one("confirm/hippocampus/shipped_sgrs_n8.csv"))
add("4b same, fp16 ensemble", "(shipped file)", "-",
    one("confirm/hippocampus/n8c48_sgrs5_ensemble_fp16.csv"), one("confirm/hippocampus/shipped_sgrs_n8.csv"))
add("5 n8c48 sgrs vs supervised, 5 seeds, keep-largest", "RESULTS 1383,1412 / README 444",
    "+0.003 [+0.001,+0.005], 229/400, p=0.004",
    seeds("hip_n8c48/hippocampus/sgrs_l20_none", range(1, 6), "_keep-largest"),
    seeds("hip_n8c48/hippocampus/supervised_l20_none", range(1, 6), "_keep-largest"))
add("5b same, raw", "-", "-",
    seeds("hip_n8c48/hippocampus/sgrs_l20_none", range(1, 6)),
    seeds("hip_n8c48/hippocampus/supervised_l20_none", range(1, 6)))
add("5c sgrs5 ensemble file vs supervised5 ensemble file, test", "RESULTS 1386",
    "+0.004 [+0.001,+0.006], 51/80",
    one("ensemble/hippocampus/n8c48_sgrs5_file.csv"), one("ensemble/hippocampus/n8c48_supervised5_file.csv"))
add("5d same on confirm", "RESULTS 1386", "+0.004 [+0.000,+0.009], 26/40",
    one("confirm/hippocampus/n8c48_sgrs5_ensemble.csv"), one("confirm/hippocampus/n8c48_supervised5_ensemble.csv"))

# ---- other RESULTS.md statements
HL = "heldout/hippocampus/"
add("LA mean-teacher vs supervised raw, 3 seeds", "RESULTS 761", "-0.005 [-0.012,+0.003], p=0.013 (n=48)",
    seeds("heldout/la/mean-teacher_l16_none", [1, 2, 3]), seeds("heldout/la/supervised_l16_none", [1, 2, 3]))
add("hip sassnet vs supervised keep-largest", "RESULTS 778", "+0.016 [+0.011,+0.021], p=0.0036 (n=240)",
    seeds(HL + "sassnet_l20_none", [1, 2, 3], "_keep-largest"), seeds(HL + "supervised_l20_none", [1, 2, 3], "_keep-largest"))
add("hip vwadv vs supervised keep-largest", "RESULTS 779", "+0.014 [+0.009,+0.020], p=0.00022 (n=240)",
    seeds(HL + "vwadv_l20_none", [1, 2, 3], "_keep-largest"), seeds(HL + "supervised_l20_none", [1, 2, 3], "_keep-largest"))
add("hip sassnet vs supervised raw (README 432)", "README 432 / RESULTS 663", "[+0.009,+0.019] (old pooled)",
    seeds(HL + "sassnet_l20_none", [1, 2, 3]), seeds(HL + "supervised_l20_none", [1, 2, 3]))
add("hip 160 labels poly vs step", "RESULTS 916-917", "+0.007 [+0.004,+0.010], 105/160, p=9.5e-05",
    seeds("heldout_poly/hippocampus/supervised_l160_none", [2, 3]), seeds(HL + "supervised_l160_none", [2, 3]))
add("hip 160 both vs none, seed 1", "RESULTS 963", "+0.003 [+0.000,+0.006], 47/80, p=0.15",
    one("perturb_both/hippocampus/supervised_l160_none_s1.csv"), one("perturb_none/hippocampus/supervised_l160_none_s1.csv"))
add("dtc both vs shipped dtc (raw), seed 1", "RESULTS 964", "+0.010 [+0.004,+0.016], 47/80, p=0.15",
    one("perturb_both_ship/hippocampus/dtc_l20_none_s1.csv"), one("ship/hippocampus/dtc_l20_none_s1.csv"))
add("sassnet both vs sassnet none 3000it, seed 1", "RESULTS 965", "+0.012 [+0.007,+0.017], 61/80, p=2.7e-06",
    one("perturb_both_ship/hippocampus/sassnet_l20_none_s1.csv"), one("ship_hip6000/hippocampus/sassnet_l20_none_s1_it3000.csv"))
add("dtc both +LC vs replaced dtc +LC", "RESULTS 966", "+0.008 [+0.002,+0.014], 45/80",
    one("perturb_both_ship/hippocampus/dtc_l20_none_s1_keep-largest.csv"), one("ship/hippocampus/dtc_l20_none_s1_keep-largest.csv"))
add("LA supervised perturb both vs none, 3 seeds", "RESULTS 1004 / README 279", "+0.005 [-0.001,+0.011], 34/48, p=0.0055",
    seeds("perturb_both/la/supervised_l16_none", [1, 2, 3]), seeds("heldout/la/supervised_l16_none", [1, 2, 3]))
TEACH = "perturb_both_ship/hippocampus/dtc_l20_none_s1_keep-largest.csv"
add("self-train student vs teacher, 2 seeds", "RESULTS 1046", "+0.001 [-0.001,+0.004], 94/160, p=0.03",
    seeds("selftrain/hippocampus/supervised_l160_none", [1, 2]), {1: TEACH, 2: TEACH})
add("self-train student vs supervised n8 both", "RESULTS 1046", "+0.004 [+0.001,+0.008]",
    seeds("selftrain/hippocampus/supervised_l160_none", [1, 2]), seeds("perturb_both/hippocampus/supervised_l20_none", [1, 2]))
add("student s2 vs ensemble of students", "RESULTS 1075", "ens +0.005 [+0.004,+0.007], 63/80",
    one("ensemble/hippocampus/ensemble.csv"), one("ensemble/hippocampus/student_s2.csv"))
add("TTA 7 views +/-10 vs one view (dtc shipped)", "RESULTS 1111", "+0.001 [+0.000,+0.002], 54/80, p=0.002",
    one("tta_rotations/hippocampus/shipped_rot10.csv"), one("tta_rotations/hippocampus/shipped.csv"))
add("TTA 7 views +/-15 vs one view (dtc shipped)", "RESULTS 1112", "+0.002 [+0.001,+0.004], 49/80, p=0.04",
    one("tta_rotations/hippocampus/shipped_rot15.csv"), one("tta_rotations/hippocampus/shipped.csv"))
add("patch 48x64x48 vs supervised s1", "RESULTS 1115", "-0.014 [-0.020,-0.009], 23/80, p=0.0002",
    one("hip_patch48/hippocampus/supervised_l20_none_s1.csv"), one("perturb_both/hippocampus/supervised_l20_none_s1.csv"))
add("sgrs s1 fp32 vs supervised s1", "RESULTS 1169", "+0.010 [+0.005,+0.015], 56/80, p=0.00045",
    one("hip_sgrs_sbnet/hippocampus/sgrs_l20_none_s1.csv"), one("perturb_both/hippocampus/supervised_l20_none_s1.csv"))
add("sbnet s1 vs supervised s1", "RESULTS 1170", "-0.073 [-0.095,-0.054], 10/80",
    one("hip_sgrs_sbnet/hippocampus/sbnet_l20_none_s1.csv"), one("perturb_both/hippocampus/supervised_l20_none_s1.csv"))
add("sassnet 2000-it copy vs supervised s1", "RESULTS 1172", "-0.007 [-0.012,-0.001], 31/80",
    one("perturb_both_ship/hippocampus/sassnet_l20_none_s1_it2000.csv"), one("perturb_both/hippocampus/supervised_l20_none_s1.csv"))
add("sgrs s1 7 views vs one view (+LC)", "RESULTS 1179", "+0.002 [+0.001,+0.003], 50/80",
    one("tta_rotations/hippocampus/sgrs_shipped_rot15_keep-largest.csv"), one("tta_rotations/hippocampus/sgrs_shipped_keep-largest.csv"))
add("sgrs3 ensemble vs sgrs seed 1 (+LC)", "RESULTS 1180", "+0.007 [+0.003,+0.011], 45/80",
    one("ensemble/hippocampus/sgrs3_ensemble.csv"), one("hip_sgrs_ship/hippocampus/sgrs_l20_none_s1_keep-largest.csv"))
add("sgrs 3000 vs 2000 it copies, 2 seeds", "RESULTS 1195", "+0.005 [+0.002,+0.007], 89/160, p=0.18",
    seeds("hip_sgrs_4000/hippocampus/sgrs_l20_none", [1, 2], "_it3000"), seeds("hip_sgrs_4000/hippocampus/sgrs_l20_none", [1, 2], "_it2000"))
SG3000 = seeds("hip_sgrs_3000/hippocampus/sgrs_l20_none", [1, 2, 3])
add("sgrs 3000 vs supervised 2000, 3 seeds", "RESULTS 1247", "+0.011 [+0.008,+0.014], 171/240, p=4e-11", SG3000, SUPB)
add("sgrs 3000 vs sgrs 2000, 3 seeds", "RESULTS 1247", "+0.004 [+0.002,+0.007], 142/240, p=0.005", SG3000, SGRS2000)
add("sgrs3000 ensemble vs its seed 1 (+LC)", "RESULTS 1249", "+0.005 [+0.002,+0.007], 55/80",
    one("ensemble/hippocampus/sgrs3000_ensemble.csv"), one("hip_sgrs_3000/hippocampus/sgrs_l20_none_s1_keep-largest.csv"))
add("student(3000 ens) vs student(2000 ens), +LC, 2 seeds", "RESULTS 1250", "-0.002 [-0.004,-0.001], 72/160",
    seeds("distil_sgrs3000/hippocampus/supervised_l160_none", [1, 2], "_keep-largest"),
    seeds("distil_sgrs3/hippocampus/supervised_l160_none", [1, 2], "_keep-largest"))
add("cap64 sgrs vs cap64 supervised, 3 seeds, +LC", "RESULTS 1300,1344", "+0.004 [+0.002,+0.006], 140/240, p=0.012",
    seeds("hip_cap64/hippocampus/sgrs_l20_none", [1, 2, 3], "_keep-largest"),
    seeds("hip_cap64/hippocampus/supervised_l20_none", [1, 2, 3], "_keep-largest"))
add("cap64 sgrs s1 vs shipped, confirm", "RESULTS 1299", "+0.006 [+0.000,+0.012], 26/40",
    one("confirm/hippocampus/cap64_s1.csv"), one("confirm/hippocampus/shipped_sgrs_n8.csv"))
add("cap64 ens file vs its seed 1, test (+LC)", "RESULTS 1301", "+0.003 [+0.000,+0.005], 53/80",
    one("ensemble/hippocampus/cap64_ensemble_file.csv"), one("hip_cap64/hippocampus/sgrs_l20_none_s1_keep-largest.csv"))
add("cap64 ensemble vs shipped, confirm", "RESULTS 1301", "+0.010 [+0.004,+0.016], 27/40",
    one("confirm/hippocampus/cap64_ensemble.csv"), one("confirm/hippocampus/shipped_sgrs_n8.csv"))
for s, pub in ((1, "-0.008 [-0.012,-0.003], 25/80, p=0.001"), (2, "-0.009 [-0.013,-0.006], 26/80, p=0.002")):
    add(f"batch 8 vs batch 4, seed {s} (+LC)", "RESULTS 1323-1324", pub,
        one(f"hip_b8/hippocampus/sgrs_l20_none_s{s}_keep-largest.csv"),
        one(f"hip_sgrs_3000/hippocampus/sgrs_l20_none_s{s}_keep-largest.csv"))
add("b8 fp16 ensemble vs its seed 1", "RESULTS 1325", "+0.003 [+0.001,+0.005]",
    one("ensemble/hippocampus/b8_ensemble_file_fp16.csv"), one("hip_b8/hippocampus/sgrs_l20_none_s1_keep-largest.csv"))
add("n8c48 sgrs s1-3 vs uncapped n8 3000 (+LC)", "RESULTS 1383", "-0.003 [-0.005,-0.001], 108/240",
    seeds("hip_n8c48/hippocampus/sgrs_l20_none", [1, 2, 3], "_keep-largest"),
    seeds("hip_sgrs_3000/hippocampus/sgrs_l20_none", [1, 2, 3], "_keep-largest"))
add("n8c48 sgrs5 ens file vs shipped sgrs n8 (+LC), test", "RESULTS 1386", "+0.007 [+0.002,+0.013], 46/80",
    one("ensemble/hippocampus/n8c48_sgrs5_file.csv"), one("hip_sgrs_ship/hippocampus/sgrs_l20_none_s1_keep-largest.csv"))
add("resenc 2-3-3-3-3 vs plain n8c48, 5 seeds (+LC)", "RESULTS 1447", "+0.003 [+0.001,+0.005], 214/400",
    seeds("hip_resenc/hippocampus/sgrs_l20_none", range(1, 6), "_keep-largest"),
    seeds("hip_n8c48/hippocampus/sgrs_l20_none", range(1, 6), "_keep-largest"))
add("resenc 3-3-3-3-3 vs plain n8c48, 5 seeds (+LC)", "RESULTS 1451", "+0.003 [+0.001,+0.005], 226/400",
    seeds("hip_resenc3/hippocampus/sgrs_l20_none", range(1, 6), "_keep-largest"),
    seeds("hip_n8c48/hippocampus/sgrs_l20_none", range(1, 6), "_keep-largest"))
add("resenc3 ens vs shipped ens, confirm", "RESULTS 1452", "+0.003 [+0.001,+0.005], 24/40",
    one("confirm/hippocampus/resenc3_sgrs5_ensemble.csv"), one("confirm/hippocampus/n8c48_sgrs5_ensemble_fp16.csv"))


def main() -> int:
    print("| comparison | where | published (pooled) | pooled, recomputed | per test case: Δ [95 % CI], better / worse "
          "cases, sign test p | per seed |")
    print("|---|---|---|---|---|---|")
    for tag, line, pub, run, ref in C:
        a, b = load(run), load(ref)
        po, pc = pooled(a, b), per_case(a, b)
        seeds_text = ", ".join(f"{v:+.4f}" for _, v in sorted(pc["per_seed"].items())) if len(pc["per_seed"]) > 1 \
            else "one model"
        print(f"| {tag} | {line} | {pub} | {po['mean']:+.4f} [{po['lo']:+.3f}, {po['hi']:+.3f}], {po['better']}/"
              f"{po['n']}, p = {po['p']:.2g} | {pc['mean']:+.4f} [{pc['lo']:+.3f}, {pc['hi']:+.3f}], {pc['better']} / "
              f"{pc['worse']} of {pc['n']}, p = {pc['p']:.2g} | {seeds_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
