"""Tape loading: what is served equals what is written, and a malformed tape is refused at
start with a message naming the file, the line and the problem."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from crypto_pipelines.replay import Tape, TapeError

HEADER = "ts,open,high,low,close,volume\n"
GOOD = [
    "1704067200000,42000.5,42010,41990.25,42001,1.5\n",
    "1704067260000,42001,42002,41999,42000,0.25\n",
    "1704067380000,42000,42000,42000,42000,0\n",  # 1704067320000 is missing: a gap
]


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_error(root: Path) -> TapeError:
    with pytest.raises(TapeError) as info:
        Tape.load(root)
    return info.value


def test_candles_read_back_exactly_with_gaps_kept(tmp_path: Path) -> None:
    write(tmp_path, "binance/BTC_USDT/ohlcv_1m.csv", HEADER + "".join(GOOD))
    tape = Tape.load(tmp_path)
    series = tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1m"]
    rows = series.rows(0, len(series))
    assert [",".join(map(str, r)) + "\n" for r in rows] == GOOD
    assert series.between(1704067260000, None, 10) == rows[1:]
    assert series.between(None, None, 2, newest=True) == rows[1:]
    assert series.between(1704067300000, 1704067370000, 10) == []
    tape.close()


def test_gzip_crlf_and_no_trailing_newline(tmp_path: Path) -> None:
    folder = tmp_path / "okx" / "BTC_USDT_USDT"
    folder.mkdir(parents=True)
    text = (HEADER + "".join(GOOD)).replace("\n", "\r\n").rstrip("\r\n")
    with gzip.open(folder / "ohlcv_1m.csv.gz", "wt", newline="") as fh:
        fh.write(text)
    tape = Tape.load(tmp_path)
    series = tape.exchanges["okx"].symbols["BTC/USDT:USDT"].ohlcv["1m"]
    assert [r.close for r in series.rows(0, len(series))] == ["42001", "42000", "42000"]
    assert tape.exchanges["okx"].markets["BTC/USDT:USDT"].type == "swap"
    tape.close()


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("ts,open,high,low,close\n", 1, "header must be"),
        (HEADER + GOOD[1] + GOOD[0], 3, "ts not sorted ascending"),
        (HEADER + GOOD[0] + GOOD[0], 3, "duplicate ts"),
        (
            HEADER + GOOD[0] + "1704067260000,42001,abc,41999,42000,0.25\n",
            3,
            "not a decimal number",
        ),
        (
            HEADER + GOOD[0] + "1704067260000,42001,,41999,42000,0.25\n",
            3,
            "missing value in column 'high'",
        ),
        (
            HEADER + GOOD[0] + "1704067260000,+42001,42002,41999,42000,0.25\n",
            3,
            "not a decimal number",
        ),
        (
            HEADER + GOOD[0] + "1704067260000,42001,42002,41999,nan,0.25\n",
            3,
            "column 'close' is not a decimal number",
        ),
        (
            HEADER + GOOD[0] + "1704067260000,42001,42002,41999,42000,inf\n",
            3,
            "column 'volume' is not a decimal number",
        ),
        (HEADER + GOOD[0] + "1704067261000,42001,42002,41999,42000,1\n", 3, "ts not aligned to 1m"),
        (
            HEADER + GOOD[0] + "1704067260000.5,42001,42002,41999,42000,1\n",
            3,
            "ts must be an integer",
        ),
        (HEADER + GOOD[0] + "\n" + GOOD[1], 3, "missing value"),
        (HEADER + GOOD[0] + "1704067260000,42001,42002,41999,42000,1,7\n", 3, "expected 6 fields"),
        ("", 1, "empty file"),
    ],
)
def test_malformed_candles_are_refused_naming_file_and_line(
    tmp_path: Path, content: str, line: int, problem: str
) -> None:
    path = write(tmp_path, "binance/BTC_USDT/ohlcv_1m.csv", content)
    error = load_error(tmp_path)
    assert error.path == path
    assert problem in str(error)
    if "line" not in problem:
        assert error.line == line, str(error)
    if line > 1 and "line" not in problem:  # the offending line quoted as the file has it
        text = content.split("\n")[line - 1]
        assert repr(text) in str(error), str(error)


def test_nan_volume_is_accepted_as_unknown(tmp_path: Path) -> None:
    write(
        tmp_path,
        "bybit/BTC_USDT_USDT/ohlcv_1h.csv",
        HEADER + "1636959600000,1.21431,1.2198,1.20895,1.20895,nan\n",
    )
    tape = Tape.load(tmp_path)
    assert (
        tape.exchanges["bybit"].symbols["BTC/USDT:USDT"].ohlcv["1h"].rows(0, 1)[0].volume == "nan"
    )
    tape.close()


@pytest.mark.parametrize(
    ("rel", "content", "problem"),
    [
        ("binance/BTCUSDT/ohlcv_1m.csv", HEADER, "unknown symbol folder"),
        ("binance/BTC_USDT/ohlcv_1min.csv", HEADER, "unknown tape file"),
        ("binance/BTC_USDT/candles.csv", HEADER, "unknown tape file"),
        (
            "binance/BTC_USDT/trades.csv",
            "ts,id,side,price,amount\n1,5,buy,1,1\n2,5,sell,1,1\n",
            "duplicate trade id",
        ),
        (
            "binance/BTC_USDT/trades.csv",
            "ts,id,side,price,amount\n1,5,long,1,1\n",
            "side must be buy or sell",
        ),
        ("binance/BTC_USDT/funding.csv", "ts,rate\n2,0.1\n1,0.1\n", "ts not sorted"),
        (
            "binance/BTC_USDT/book.jsonl",
            '{"ts": 1, "bids": [[2, 1], [3, 1]], "asks": []}\n',
            "bids must be sorted",
        ),
        ("binance/BTC_USDT/book.jsonl", '{"ts": 1, "bids": [[2, 1]]\n', "not a JSON object"),
        (
            "binance/markets.json",
            '[{"symbol": "BTC/USDT", "type": "swap"}]',
            "does not match the symbol",
        ),
        (
            "binance/markets.json",
            '[{"symbol": "BTC/USDT", "price_tick": -1}]',
            "price_tick must be a positive decimal",
        ),
    ],
)
def test_other_malformed_files_are_refused(
    tmp_path: Path, rel: str, content: str, problem: str
) -> None:
    path = write(tmp_path, rel, content)
    error = load_error(tmp_path)
    assert error.path in (path, path.parent) and problem in str(error), str(error)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"ts": 5, "bids": [["abc", "1"]], "asks": []}', "level must be [price, amount] numbers"),
        ('{"ts": "5", "bids": [], "asks": []}', "each line must be"),
        ('{"ts": 5, "bids": [[2, 1]]', "not a JSON object"),
        ('{"ts": 5, "bids": [], "asks": {"1": 2}}', "'asks' must be a list"),
    ],
)
def test_book_errors_quote_the_line(tmp_path: Path, line: str, problem: str) -> None:
    good = '{"ts": 1, "bids": [[2, 1]], "asks": [[3, 1]]}\n'
    write(tmp_path, "binance/BTC_USDT/book.jsonl", good + line + "\n")
    error = load_error(tmp_path)
    assert error.line == 2 and problem in str(error)
    assert str(error).endswith(repr(line)), str(error)


def test_trade_line_numbers_in_errors(tmp_path: Path) -> None:
    rows = "".join(f"{1000 + i},{i},buy,1.5,2\n" for i in range(10))
    write(
        tmp_path,
        "binance/BTC_USDT/trades.csv",
        "ts,id,side,price,amount\n" + rows + "1011,99,sell,x,1\n",
    )
    error = load_error(tmp_path)
    assert error.line == 12 and "not a decimal number" in str(error)


def test_markets_json_fields_are_used(tmp_path: Path) -> None:
    write(tmp_path, "binance/BTC_USDT/ohlcv_1m.csv", HEADER + "".join(GOOD))
    write(
        tmp_path,
        "binance/markets.json",
        '[{"symbol": "BTC/USDT", "price_tick": "0.01", "amount_step": "0.0001", "listed_ms": 5}, {"symbol": "ETH/USDT"}]',
    )
    tape = Tape.load(tmp_path)
    markets = tape.exchanges["binance"].markets
    assert (
        markets["BTC/USDT"].price_tick,
        markets["BTC/USDT"].amount_step,
        markets["BTC/USDT"].listed_ms,
    ) == ("0.01", "0.0001", 5)
    assert "ETH/USDT" in markets  # listed without data
    tape.close()


def test_real_tapes_load(real_tape_dir: Path) -> None:
    tape = Tape.load(real_tape_dir)
    okx = tape.exchanges["okx"].symbols["BTC/USDT"].ohlcv["1m"]
    assert len(okx) == 13_681
    book = tape.exchanges["bybit"].symbols["XRP/USDT:USDT"].book
    assert book is not None and len(book) == 50
    tape.close()
