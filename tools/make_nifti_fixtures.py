#!/usr/bin/python3
"""Writes tests/fixtures/nifti/: NIfTI files written by tools other than ours, each with a JSON of
what nibabel reads from it, plus malformed files for the error paths.

Sources
  * nibabel's own test data (Debian python3-nibabel): big-endian int16/float32, NIfTI-2 4-D,
    a header-only pair, a tiny uint8 file with only an sform.
  * nifti_tool (Debian nifti-bin, i.e. NIfTI-clib's own tool): one file per datatype made with
    -make_im; the voxel bytes are then filled by this script (make_im writes zeros) and the
    scaling fields set with nifti_tool -mod_hdr. nibabel reads the result for the truth.
  * nibabel-written files: big-endian float64, NIfTI-2 3-D with scaling, qform-only oblique,
    pixdim-only, a .hdr/.img pair, NaN/Inf, wrong-grid pairs.

JSON per file (<file>.json): shape (x, y, z[, t]), affine (the one a NIfTI reader should use:
sform if sform_code > 0, else qform if qform_code > 0, else NIfTI method 1 = diag(pixdim) — note
nibabel's own fallback is a centred ANALYZE-style affine, which we record as nibabel_affine),
affine_source, dtype, version, big_endian, scaled statistics over float32 values (sum as float64,
min, max, nan/inf counts) and sampled voxels [i, j, k, value]; for malformed files an "error"
substring the reader's message must contain. Canonical reorientation (nibabel's
as_closest_canonical) is recorded for the oblique files.

Run: /usr/bin/python3 tools/make_nifti_fixtures.py   (needs python3-nibabel and nifti-bin)
"""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys

import nibabel as nib
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "nifti")
NIB_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def path(name):
    return os.path.join(OUT, name)


def best_affine(img):
    """sform, qform, or NIfTI method 1 (diag(pixdim)); returns (affine, source)."""
    h = img.header
    if int(h["sform_code"]) > 0:
        return h.get_sform(), "sform"
    if int(h["qform_code"]) > 0:
        return h.get_qform(), "qform"
    zooms = [z if z > 0 else 1.0 for z in h.get_zooms()[:3]]
    return np.diag(list(zooms) + [1.0]), "pixdim"


def samples(data, n=8, seed=0):
    rng = np.random.default_rng(seed)
    shape = data.shape[:3]
    picks = [(0, 0, 0), tuple(s - 1 for s in shape)]
    picks += [tuple(int(rng.integers(0, s)) for s in shape) for _ in range(n)]
    return [[int(i), int(j), int(k), float(np.float32(data[i, j, k]))] for i, j, k in picks]


def describe(name, extra=None, canonical=False):
    img = nib.load(path(name))
    aff, source = best_affine(img)
    data32 = np.asarray(img.get_fdata(dtype=np.float64)).astype(np.float32)
    finite = data32[np.isfinite(data32)]
    h = img.header
    rec = {
        "file": name,
        "shape": [int(s) for s in img.shape],
        "affine": np.asarray(aff, dtype=np.float64).tolist(),
        "affine_source": source,
        "nibabel_affine": np.asarray(img.affine, dtype=np.float64).tolist(),
        "orientation": "".join(nib.aff2axcodes(aff)),
        "dtype": np.dtype(h.get_data_dtype()).newbyteorder("=").name,
        "version": 2 if isinstance(h, nib.Nifti2Header) else 1,
        "big_endian": h.endianness == ">",
        # nibabel moves the header's scaling into the data proxy (and NaNs the header fields)
        "scl": [float(img.dataobj.slope), float(img.dataobj.inter)],
    }
    if len(img.shape) == 3 or (len(img.shape) == 4 and img.shape[3] == 1):
        data32 = data32.reshape(img.shape[:3])
        rec.update({
            "sum": float(np.sum(finite.astype(np.float64))),
            "min": float(finite.min()),
            "max": float(finite.max()),
            "nan_count": int(np.isnan(data32).sum()),
            "inf_count": int(np.isinf(data32).sum()),
            "samples": samples(data32),
        })
    if canonical:
        can = nib.as_closest_canonical(nib.Nifti1Image(data32, aff))
        cd = np.asarray(can.dataobj)
        rec["canonical"] = {
            "shape": [int(s) for s in can.shape],
            "affine": np.asarray(can.affine, dtype=np.float64).tolist(),
            "sum": float(np.sum(cd.astype(np.float64))),
            "samples": samples(cd, seed=1),
        }
    if extra:
        rec.update(extra)
    write_json(name, rec)
    return rec


def write_json(name, rec):
    with open(path(name) + ".json", "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")


def error_case(name, substring, note):
    write_json(name, {"file": name, "error": substring, "note": note})


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


# --- files from nibabel's test data --------------------------------------------------------------
def copy_nibabel_files():
    for name in ["anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz"]:
        shutil.copy(os.path.join(NIB_DATA, name), path(name))
        describe(name, canonical=True)
    shutil.copy(os.path.join(NIB_DATA, "example_nifti2.nii.gz"), path("example_nifti2_4d.nii.gz"))
    describe("example_nifti2_4d.nii.gz", {"error": "is 4-D"})
    shutil.copy(os.path.join(NIB_DATA, "nifti1.hdr"), path("header_only.hdr"))
    error_case("header_only.hdr", "header_only.img", "nibabel's header-only pair: the .img is missing")
    shutil.copy(os.path.join(NIB_DATA, "analyze.hdr"), path("analyze.hdr"))
    error_case("analyze.hdr", "ANALYZE", "an ANALYZE 7.5 header (no NIfTI magic)")


# --- one file per datatype, made by nifti_tool ------------------------------------------------------
DATATYPES = [  # name, NIfTI code, numpy dtype, values for arange(60)
    ("uint8", 2, np.uint8, lambda a: a * 4),
    ("int8", 256, np.int8, lambda a: (a - 30) * 4),
    ("int16", 4, np.int16, lambda a: (a - 30) * 1000),
    ("uint16", 512, np.uint16, lambda a: a * 1000),
    ("int32", 8, np.int32, lambda a: (a - 30) * 70_000_000),
    ("uint32", 768, np.uint32, lambda a: a * 70_000_000),
    ("int64", 1024, np.int64, lambda a: (a - 30) * 300_000_000_000_000_000),
    ("uint64", 1280, np.uint64, lambda a: a * 300_000_000_000_000_000),
    ("float32", 16, np.float32, lambda a: (a - 30) * 0.37),
    ("float64", 64, np.float64, lambda a: (a - 30) * np.pi * 1e-3),
]
SCALING = {"uint8": (2.0, 1.0), "int16": (0.5, -3.0), "float32": (0.0, 7.0), "int32": (1e-6, 0.25)}


def make_datatype_files():
    dims = ["3", "5", "4", "3", "0", "0", "0", "0"]
    for name, code, dtype, values in DATATYPES:
        fname = f"dt_{name}.nii"
        if os.path.exists(path(fname)):
            os.remove(path(fname))
        run("nifti_tool", "-make_im", "-prefix", path(fname), "-new_dim", *dims, "-new_datatype", str(code))
        arr = np.array([values(a) for a in range(60)], dtype=np.float64)
        raw = arr.astype(dtype).tobytes()  # i fastest: the order make_im's 5×4×3 grid is stored in
        with open(path(fname), "r+b") as f:
            f.seek(352)
            f.write(raw)
        mods = ["-mod_field", "pixdim", "1 1.5 2 2.5 0 0 0 0"]
        if name in SCALING:
            slope, inter = SCALING[name]
            mods += ["-mod_field", "scl_slope", str(slope), "-mod_field", "scl_inter", str(inter)]
        run("nifti_tool", "-mod_hdr", *mods, "-overwrite", "-infiles", path(fname))
        describe(fname)
    for name, code in [("complex64", 32), ("rgb24", 128)]:
        fname = f"dt_{name}.nii"
        if os.path.exists(path(fname)):
            os.remove(path(fname))
        run("nifti_tool", "-make_im", "-prefix", path(fname), "-new_dim", *dims, "-new_datatype", str(code))
        error_case(fname, "not supported", f"{name} made by nifti_tool: must be rejected")


# --- files written by nibabel ---------------------------------------------------------------------------
def rotation(ax, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    r = np.eye(3)
    i, j = [(1, 2), (0, 2), (0, 1)][ax]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def make_nibabel_files():
    rng = np.random.default_rng(42)
    anat = nib.load(path("anatomical.nii"))
    crop = np.asarray(anat.dataobj)[8:25, 10:31, 6:19]  # 17×21×13 int16

    # Big-endian float64 with an LPS-like oblique sform (for reorientation).
    r = rotation(2, 20) @ rotation(0, 10) @ np.diag([-1.2, -1.0, 1.5])
    aff = np.eye(4)
    aff[:3, :3] = r
    aff[:3, 3] = [40, 30, -20]
    hdr = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(crop.astype(">f8") * 0.25 + 1.5, aff, hdr)
    img.header.set_data_dtype(">f8")
    img.set_sform(aff, 2)
    img.set_qform(aff, 1)
    nib.save(img, path("be_float64_oblique.nii"))
    describe("be_float64_oblique.nii", canonical=True)

    # qform only (sform_code 0), axes permuted (voxel x runs along world S, y along R, z along P).
    perm = np.array([[0, 2.0, 0], [0, 0, -1.5], [1.8, 0, 0]])
    aff = np.eye(4)
    aff[:3, :3] = perm @ rotation(1, 5)
    aff[:3, 3] = [-10, 50, 5]
    img = nib.Nifti1Image(crop.astype(np.float32), aff)
    img.set_qform(aff, 1)
    img.set_sform(np.eye(4), 0)
    nib.save(img, path("qform_only.nii.gz"))
    describe("qform_only.nii.gz", canonical=True)

    # Neither code: NIfTI method 1.
    img = nib.Nifti1Image(crop[:9, :7, :5].astype(np.int16), None)
    img.header.set_zooms((2.0, 3.0, 4.0))
    img.set_qform(None, 0)
    img.set_sform(None, 0)
    img.header["qform_code"] = 0
    img.header["sform_code"] = 0
    nib.save(img, path("pixdim_only.nii"))
    describe("pixdim_only.nii")

    # NIfTI-2, 3-D, int16 with scaling: nibabel writes it, then the scl fields (doubles at bytes
    # 176 and 184 of the NIfTI-2 header) are patched so that the stored integers stay as they are.
    ex2 = nib.load(os.path.join(NIB_DATA, "example_nifti2.nii.gz"))
    vol = np.asarray(ex2.dataobj)[..., 0].astype(np.int16)
    img = nib.Nifti2Image(vol, ex2.affine)
    img.set_sform(ex2.affine, 1)
    img.set_qform(ex2.affine, 1)
    blob = bytearray(img.to_bytes())
    assert blob[4:7] == b"n+2"
    blob[176:192] = struct.pack("<dd", 0.125, 100.0)
    with open(path("nifti2_scaled.nii.gz"), "wb") as g:
        g.write(gzip.compress(bytes(blob), mtime=0))
    describe("nifti2_scaled.nii.gz")

    # A .hdr/.img pair (uint16 with scaling).
    img = nib.Nifti1Pair(crop.astype(np.uint16) + 7, anat.affine)
    img.header.set_slope_inter(3.0, -2.0)
    img.set_sform(anat.affine, 1)
    nib.save(img, path("pair_uint16.hdr"))
    describe("pair_uint16.hdr")

    # NaN and Inf voxels.
    data = rng.normal(size=(6, 5, 4)).astype(np.float32)
    data[1, 2, 3] = data[4, 0, 1] = data[5, 4, 0] = np.nan
    data[0, 1, 2] = np.inf
    nib.save(nib.Nifti1Image(data, np.diag([2, 2, 2, 1.0])), path("nan3_inf1.nii.gz"))
    describe("nan3_inf1.nii.gz", {"error": "3 NaN voxels and 1 infinite voxel"})

    # Grids: same shape, one shifted by 2 mm; one with another shape.
    base = np.diag([1.5, 1.5, 1.5, 1.0])
    base[:3, 3] = [-20, -30, -10]
    small = rng.uniform(0, 1, size=(7, 6, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(small, base), path("grid_a.nii.gz"))
    shifted = base.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(small, shifted), path("grid_shifted.nii.gz"))
    nib.save(nib.Nifti1Image(small[:, :, :4].copy(), base), path("grid_other_shape.nii.gz"))
    tiny = base.copy()
    tiny[1, 3] += 0.0004  # within the 1e-3 mm tolerance
    nib.save(nib.Nifti1Image(small, tiny), path("grid_a_jitter.nii.gz"))
    for name in ["grid_a.nii.gz", "grid_shifted.nii.gz", "grid_other_shape.nii.gz", "grid_a_jitter.nii.gz"]:
        describe(name)

    # 4-D with a trailing singleton dimension: accepted as 3-D.
    nib.save(nib.Nifti1Image(small[..., None], base), path("trailing_singleton_4d.nii.gz"))
    describe("trailing_singleton_4d.nii.gz")

    # Truncation and garbage.
    noise = rng.uniform(0, 1000, size=(16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(noise, base), path("tmp_full.nii.gz"))
    with open(path("tmp_full.nii.gz"), "rb") as f:
        blob = f.read()
    with open(path("truncated.nii.gz"), "wb") as f:
        f.write(blob[: len(blob) // 2])
    os.remove(path("tmp_full.nii.gz"))
    error_case("truncated.nii.gz", "truncated", "gzip stream cut in half")
    with open(path("anatomical.nii"), "rb") as f:
        blob = f.read()
    with open(path("truncated.nii"), "wb") as f:
        f.write(blob[: 352 + 20000])
    error_case("truncated.nii", "truncated", "anatomical.nii cut after 20000 bytes of voxel data")
    shutil.copy(path("pair_uint16.hdr"), path("pair_truncated.hdr"))
    with open(path("pair_uint16.img"), "rb") as f:
        blob = f.read()
    with open(path("pair_truncated.img"), "wb") as f:
        f.write(blob[: len(blob) - 100])
    error_case("pair_truncated.hdr", "truncated", "a .hdr/.img pair whose .img lacks its last 100 bytes")
    with open(path("text.nii"), "w") as f:
        f.write("Subject,PET_date\n002_S_0413,2011-06-01\n" * 20)
    error_case("text.nii", "not a NIfTI file", "a CSV file named .nii")
    with open(path("short.nii.gz"), "wb") as f:
        f.write(gzip.compress(b"\x5c\x01\x00\x00tiny", mtime=0))
    error_case("short.nii.gz", "not a NIfTI file", "8 bytes, starts like a NIfTI-1 header")


def main():
    for tool in ["nifti_tool"]:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nifti-bin")
    os.makedirs(OUT, exist_ok=True)
    copy_nibabel_files()
    make_datatype_files()
    make_nibabel_files()
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1e6:.2f} MB, into {OUT}")


if __name__ == "__main__":
    main()
