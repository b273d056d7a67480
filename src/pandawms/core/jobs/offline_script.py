"""A shell script that runs a job again outside PanDA (job/generate_offline_execution_script).

The script has the parts the real server's has, in the same order: usage comments and options,
a check for ATLAS's local setup (ALRB), the download of the input files with Rucio (``--nfiles``
keeps only the first N data files), the transformation fetched when it is a URL (user jobs),
and the transformation run with the job's parameters inside the job's release and platform
(``asetup``) in an ALRB container of the job's cmtConfig, or the job's own container image.
Every value taken from the job is shell-quoted: a job's fields are user input.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

#: Transformations of user (analysis) jobs: fetched by URL and run from the working directory.
_USER_TRFS = ("runAthena", "runGen", "runcontainer", "runMerge", "buildJob", "buildGen")


def _text(value: Any) -> str:
    return "" if value in (None, "NULL") else str(value)


def _inputs(files: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(data DIDs in job order, archive DIDs such as lib.tgz that are always downloaded)."""
    data: list[str] = []
    archives: list[str] = []
    for item in files:
        if item.get("type") != "input" or not item.get("lfn"):
            continue
        did = (
            f"{_text(item.get('scope')) or _text(item.get('dataset')).split(':')[0] or 'user'}:{item['lfn']}"
        )
        target = archives if str(item["lfn"]).endswith((".tgz", ".tar.gz")) else data
        if did not in target:
            target.append(did)
    return data, archives


def offline_script(job: Mapping[str, Any]) -> str:
    """The script for ``job`` (a full job as job/get_description answers it)."""
    trf = _text(job.get("transformation"))
    if not trf:
        return f"ERROR: PandaID={job.get('PandaID')} has no transformation"
    is_user = job.get("prodSourceLabel") == "user" or any(name in trf for name in _USER_TRFS)
    params = _text(job.get("jobParameters"))
    data, archives = _inputs(job.get("Files") or [])
    cmt = _text(job.get("cmtConfig"))
    platform = cmt.split("@")[0]
    release = _text(job.get("AtlasRelease")).replace("Atlas-", "")
    home = _text(job.get("homepackage")).replace("AnalysisTransforms-", "").replace("AnalysisTransforms", "")
    tags = [t for t in home.replace("_", "/").split("/") if t]
    if release and release not in tags:
        tags.append(release)
    container = _text(job.get("container_name"))
    trf_name = trf.rsplit("/", 1)[-1]

    out: list[str] = [
        "#!/bin/bash",
        "",
        f"# Runs PandaID={job.get('PandaID')} ({_text(job.get('jobName'))[:200]}) again outside PanDA:",
        "#   1) save this script  2) chmod +x ./<script>  3) setupATLAS  4) ./<script> [options]",
        "#",
        "# Options:",
        "#   --nfiles=<N>   use only the first N input data files",
        "",
        'usage() { sed -n "/^# Runs/,/^$/p" "$0"; }',
        'nfiles=""',
        'for arg in "$@"; do',
        '  case "$arg" in',
        '    --nfiles=*) nfiles="${arg#*=}" ;;',
        "    -h|--help) usage; exit 0 ;;",
        '    *) echo "ERROR: unknown option: $arg"; usage; exit 1 ;;',
        "  esac",
        "done",
        "",
        'if [ -z "$ATLAS_LOCAL_ROOT_BASE" ]; then',
        '  echo "ERROR: setupATLAS is required to run this script"; exit 1',
        "fi",
        "",
        "#input files",
        "data_dids=(" + " ".join(shlex.quote(d) for d in data) + ")",
        'if [ -n "$nfiles" ]; then',
        '  case "$nfiles" in \'\'|*[!0-9]*|0) echo "ERROR: --nfiles must be a positive integer"; exit 1 ;; esac',
        '  data_dids=("${data_dids[@]:0:$nfiles}")',
        "fi",
    ]
    if data or archives:
        out += [
            "",
            "#retrieve inputs",
            "(",
            "  source ${ATLAS_LOCAL_ROOT_BASE}/user/atlasLocalSetup.sh --quiet",
            "  lsetup rucio",
            '  for did in "${data_dids[@]}"; do rucio download "$did" --no-subdir || exit 1; done',
        ]
        out += [f"  rucio download {shlex.quote(did)} --no-subdir || exit 1" for did in archives]
        out += [") || exit 1"]
    if is_user and "://" in trf:
        out += ["", "#get trf", f"wget {shlex.quote(trf)} || exit 1", f"chmod +x {shlex.quote(trf_name)}"]
    run = ("./" if is_user else "") + shlex.quote(trf_name) + (" " + params if params else "")
    if is_user:
        run += " --debug"
    cores = job.get("coreCount")
    payload = ["", "source ${ATLAS_LOCAL_ROOT_BASE}/user/atlasLocalSetup.sh", "", "#transform commands"]
    if platform or tags:
        payload.append(f"asetup --platform={shlex.quote(platform)} {shlex.quote(','.join(tags))}".rstrip())
    if isinstance(cores, int) and cores > 1:
        payload += [f"export ATHENA_PROC_NUMBER={cores}", f"export ATHENA_CORE_NUMBER={cores}"]
    payload.append(run)
    image = container or (cmt.split("@")[-1] if cmt else "")
    out += [
        "",
        "#the payload, run in an ALRB container",
        "temp_file=$(mktemp)",
        "cat << 'PAYLOAD_EOF' > \"$temp_file\"",
        *payload,
        "PAYLOAD_EOF",
        "",
        'chmod +x "$temp_file"',
        f'source ${{ATLAS_LOCAL_ROOT_BASE}}/user/atlasLocalSetup.sh -c {shlex.quote(image)} -r "$temp_file"',
        'rm "$temp_file"',
        "",
    ]
    return "\n".join(out)
