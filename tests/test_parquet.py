"""`tproxy-nb logs PATH... --to parquet OUT`: parsed logs for pandas or DuckDB, ids kept unsigned 64-bit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tproxy_nb import cli
from tproxy_nb.analysis.logs import parse_envoy_log

CHAIN = Path(__file__).parent / "data" / "chain"


def test_logs_go_to_one_parquet_file_that_reads_back_as_parsed(tmp_path, capsys):
    big_stream = "18446744073709551615"  # 2^64 - 1: only an unsigned 64-bit column holds it
    extra = tmp_path / "extra.log"
    extra.write_text(
        "[2024-01-02 03:04:05.678][12][debug][http] [source/common/http/conn_manager_impl.cc:329] "
        f'[Tags: "ConnectionId":"7","StreamId":"{big_stream}"] new stream\n'
    )
    out = tmp_path / "logs.parquet"
    paths = [str(CHAIN / "igw.log"), str(extra)]
    assert cli.main(["logs", *paths, "--to", "parquet", str(out)]) == 0
    df = pd.read_parquet(out)
    expected = len(parse_envoy_log(CHAIN / "igw.log")) + 1
    assert f"{expected} rows from 2 log(s) written to {out}" in capsys.readouterr().out
    assert len(df) == expected and set(df["file"]) == set(paths)
    assert str(df["stream_id"].dtype) == "UInt64" and str(df["connection_id"].dtype) == "UInt64"
    assert df.loc[df["file"] == str(extra), "stream_id"].iloc[0] == int(big_stream)
    assert str(df["timestamp"].dtype).startswith("datetime64")
    # The README's query, in pandas: RBAC verdicts per file.
    rbac = df[(df["logger"] == "rbac") & df["message"].str.contains("enforced", na=False)]
    assert rbac.groupby("file").size().to_dict() == {str(CHAIN / "igw.log"): 2}


def test_a_bad_path_is_one_paragraph_and_exit_2(tmp_path, capsys):
    out = tmp_path / "logs.parquet"
    assert cli.main(["logs", str(tmp_path / "missing.log"), "--to", "parquet", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.log" in err and "Nothing was written" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert cli.main(["logs", str(CHAIN / "igw.log"), "--to", "csv", str(out)]) == 2
    assert "parquet" in capsys.readouterr().err
