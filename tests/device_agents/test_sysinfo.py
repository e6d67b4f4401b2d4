"""Device facts and their fingerprint."""

from widthwise.device_agents import sysinfo


def test_facts_are_filled_and_the_fingerprint_is_stable():
    facts = sysinfo.device_facts()
    assert facts["cpu"] and facts["cores"] >= 1 and facts["os"] and facts["python"] and facts["machine"]
    assert sysinfo.fingerprint() == sysinfo.fingerprint(dict(facts))
    assert len(sysinfo.fingerprint()) == 64
    assert sysinfo.fingerprint(dict(facts, cores=facts["cores"] + 1)) != sysinfo.fingerprint()


def test_cpu_model_from_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-8650U\n")
    assert sysinfo._cpu_from_proc(str(x86)) == "Intel(R) Core(TM) i7-8650U"
    arm = tmp_path / "arm"
    arm.write_text(
        "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\n"
        "Hardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n"
    )
    assert sysinfo._cpu_from_proc(str(arm)) == "Raspberry Pi 4 Model B Rev 1.4"
    assert sysinfo._cpu_from_proc(str(tmp_path / "missing")) == ""
