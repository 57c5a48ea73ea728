#!/usr/bin/env python3
"""Regenerates plugin-energy-to-carbon/data/country_intensity.csv.

Inputs: the codecarbon wheel from PyPI (MIT licence), whose file
codecarbon/data/private_infra/global_energy_mix.json holds the annual carbon
intensity of electricity per country (g CO2e/kWh, with its year), and Debian's
iso-codes package (/usr/share/iso-codes/json/iso_3166-1.json) for the alpha-2
code and the English name of each alpha-3 code.

    pip download --no-deps codecarbon==3.3.2 -d /tmp/cc
    python3 scripts/carbon-intensity-table.py /tmp/cc/codecarbon-3.3.2-py3-none-any.whl
"""
import csv
import json
import sys
import zipfile

ISO = "/usr/share/iso-codes/json/iso_3166-1.json"
OUT = "plugin-energy-to-carbon/data/country_intensity.csv"


def main():
    wheel = sys.argv[1]
    with zipfile.ZipFile(wheel) as z:
        mix = json.loads(z.read("codecarbon/data/private_infra/global_energy_mix.json"))
    with open(ISO) as f:
        iso = {c["alpha_3"]: c for c in json.load(f)["3166-1"]}
    with open(OUT, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["alpha_2", "alpha_3", "name", "g_co2e_per_kwh", "year"])
        for alpha_3 in sorted(mix):
            entry = mix[alpha_3]
            country = iso.get(alpha_3)
            if country is None or entry.get("carbon_intensity") is None:
                print(f"skipped {alpha_3}", file=sys.stderr)
                continue
            w.writerow([country["alpha_2"], alpha_3, country["name"],
                        entry["carbon_intensity"], entry["year"]])


if __name__ == "__main__":
    main()
