"""The processor report: parsed from /proc/cpuinfo texts of the CPU kinds our users have."""

from __future__ import annotations

from engine.cpu import CpuInfo, cpu_info, parse_proc_cpuinfo


def x86_cpuinfo(model: str, vendor: str, flags: str, cores: int = 2, threads_per_core: int = 1) -> str:
    blocks = []
    for i in range(cores * threads_per_core):
        blocks.append(
            f"processor\t: {i}\nvendor_id\t: {vendor}\nmodel name\t: {model}\nphysical id\t: 0\n"
            f"core id\t\t: {i // threads_per_core}\nflags\t\t: fpu sse sse2 {flags}\n"
        )
    return "\n".join(blocks)


ZEN1 = x86_cpuinfo(
    "AMD EPYC 7551 32-Core Processor", "AuthenticAMD", "avx fma f16c avx2 bmi2", cores=2, threads_per_core=2
)
SAPPHIRE_RAPIDS = x86_cpuinfo(
    "Intel(R) Xeon(R) Platinum 8480+",
    "GenuineIntel",
    "avx fma f16c avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8",
)
ZEN4 = x86_cpuinfo("AMD EPYC 9R14", "AuthenticAMD", "avx fma f16c avx2 avx512f avx512bw avx512_vnni avx512_bf16")
GRAVITON3 = "\n".join(
    f"processor\t: {i}\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes asimddp sve i8mm "
    f"bf16\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"
    for i in range(4)
)


def test_an_avx2_only_epyc_has_no_int8_matrix_units_and_counts_physical_cores():
    cpu = parse_proc_cpuinfo(ZEN1, "x86_64")
    assert cpu.vendor == "AMD" and cpu.features == {"avx2", "fma", "f16c"}
    assert (cpu.physical_cores, cpu.logical_cores) == (2, 4)
    assert cpu.cpu_class == "x86-avx2" and cpu.int8_units == ""
    assert cpu.summary() == "AMD EPYC 7551 32-Core Processor, AVX2, no int8 matrix units, 2 cores"


def test_amx_outranks_vnni_and_avx512_is_named():
    cpu = parse_proc_cpuinfo(SAPPHIRE_RAPIDS, "x86_64")
    assert cpu.vendor == "Intel" and {"amx_int8", "amx_tile", "avx512_vnni", "avx_vnni"} <= cpu.features
    assert cpu.cpu_class == "x86-amx" and cpu.int8_units == "AMX"
    assert "AVX-512" in cpu.summary()
    zen4 = parse_proc_cpuinfo(ZEN4, "x86_64")
    assert zen4.cpu_class == "x86-avx512-vnni" and zen4.int8_units == "AVX-512 VNNI"


def test_arm64_features_come_from_the_features_line():
    cpu = parse_proc_cpuinfo(GRAVITON3, "aarch64")
    assert cpu.arch == "arm64" and cpu.vendor == "ARM"
    assert cpu.features == {"neon", "dotprod", "i8mm", "sve"}
    assert cpu.cpu_class == "arm64-i8mm" and cpu.physical_cores == 4


def test_this_machine_is_described():
    cpu = cpu_info()
    assert isinstance(cpu, CpuInfo) and cpu.physical_cores >= 1 and cpu.model
    d = cpu.to_dict()
    assert d["summary"] == cpu.summary() and d["cpu_class"] == cpu.cpu_class
    assert isinstance(d["features"], list)


def test_an_old_full_range_int8_model_is_flagged_only_where_it_loses_accuracy(tiny_int4):
    from dataclasses import replace

    from engine.engine import saturating_int8_warning
    from engine.manifest import Manifest

    current = Manifest.load(tiny_int4)
    avx2 = parse_proc_cpuinfo(ZEN1, "x86_64")
    assert current.weights.int8_weight_max == 63
    assert saturating_int8_warning(current, avx2) is None
    old = replace(current, weights=replace(current.weights, int8_weight_max=127))
    warning = saturating_int8_warning(old, avx2)
    assert warning and "Convert the model again" in warning and "no int8 matrix units" in warning
    assert saturating_int8_warning(old, parse_proc_cpuinfo(ZEN4, "x86_64")) is None  # VNNI does not saturate
    assert saturating_int8_warning(old, parse_proc_cpuinfo(GRAVITON3, "aarch64")) is None
    fp32_vision = replace(old, weights=replace(old.weights, vision="fp32"))
    assert saturating_int8_warning(fp32_vision, avx2) is None


def test_where_the_os_cannot_see_int8_units_nothing_is_claimed(tiny_int4):
    from dataclasses import replace

    from engine.engine import saturating_int8_warning
    from engine.manifest import Manifest

    windows_x86 = CpuInfo("Intel", "Intel Core", "x86_64", frozenset({"avx2", "avx512f"}), 4, 8, int8_known=False)
    assert windows_x86.summary().endswith("int8 units unknown, 4 cores")
    current = Manifest.load(tiny_int4)
    old = replace(current, weights=replace(current.weights, vision="int8", int8_weight_max=127))
    assert saturating_int8_warning(old, windows_x86) is None
