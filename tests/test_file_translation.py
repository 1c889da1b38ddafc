"""LibreTranslate's /translate_file and /download_file over real HTTP: every format round-trips (structure and
styling kept, text translated as /translate translates it), limits, corrupt and mislabelled files, expiry, and
the safety of the download route."""

from __future__ import annotations

import io
import os
import re
import time
import zipfile

import docx
import httpx
import pytest
from odfdo import Document as OdfDocument
from odfdo import Header, Paragraph, Span
from service_helpers import running_service, wait_until

from service import documents
from service.filetranslation import plan, split_long

LIMITS = {"max_texts": 4, "max_text_chars": 200, "max_request_chars": 500, "max_body_bytes": 200_000,
          "max_file_bytes": 100_000, "max_file_chars": 3000, "max_file_unpacked_bytes": 2_000_000,
          "files_ttl_s": 4.0}
NAME = re.compile(r"/download_file/([0-9a-f]{32}\.[A-Za-z0-9_-]+\.(txt|html|srt|docx|odt))$")


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("translated-files")


@pytest.fixture(scope="module")
def server(served_models_dir, files_dir):
    with running_service(served_models_dir, files_dir=files_dir, **LIMITS) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def translate(client):
    """/translate's answer for a text (a file's texts must come back translated the same way)."""
    cache: dict[tuple[str, str], str] = {}

    def call(text: str, text_format: str = "text") -> str:
        if (text, text_format) not in cache:
            response = client.post("/translate", json={"q": text, "source": "de", "target": "en",
                                                       "format": text_format})
            assert response.status_code == 200, response.text
            cache[text, text_format] = response.json()["translatedText"]
        return cache[text, text_format]

    return call


def upload(client: httpx.Client, filename: str, content: bytes, source: str = "de", target: str = "en",
           **extra) -> httpx.Response:
    return client.post("/translate_file", data={"source": source, "target": target, **extra},
                       files={"file": (filename, content)})


def translated_file(client: httpx.Client, filename: str, content: bytes, **fields) -> tuple[bytes, httpx.Response]:
    response = upload(client, filename, content, **fields)
    assert response.status_code == 200, response.text
    url = response.json()["translatedFileUrl"]
    assert set(response.json()) == {"translatedFileUrl"} and url.startswith(str(client.base_url).rstrip("/"))
    assert NAME.search(url), url
    download = client.get(url)
    assert download.status_code == 200, download.text
    return download.content, download


def assert_error(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert re.search(words, response.json()["error"]), response.json()["error"]


# ---- formats -----------------------------------------------------------------------------------------------------

def test_txt_round_trip(client, translate):
    text = "Ein Hund rennt über die Wiese.\n\nZwei Frauen sitzen auf einer Bank.  Ein Mann liest.\n"
    content, download = translated_file(client, "Notizen.txt", text.encode())
    assert content.decode("utf-8") == translate(text)
    assert download.headers["content-type"].startswith("text/plain")
    assert download.headers["content-disposition"] == 'attachment; filename="Notizen_en.txt"'
    assert download.headers["x-content-type-options"] == "nosniff"
    translated = upload(client, "Notizen.txt", text.encode())
    assert float(translated.headers["X-Queue-Time-Ms"]) >= 0 and float(translated.headers["X-Inference-Time-Ms"]) >= 0


def test_txt_encodings_are_kept(client, translate):
    text = "Ein Hund rennt über die Wiese.\n"
    with_bom, _ = translated_file(client, "bom.txt", b"\xef\xbb\xbf" + text.encode())
    assert with_bom == b"\xef\xbb\xbf" + translate(text).encode()
    utf16, _ = translated_file(client, "utf16.txt", text.encode("utf-16"))
    assert utf16.decode("utf-16") == translate(text) and utf16[:2] in (b"\xff\xfe", b"\xfe\xff")


def test_long_txt_is_split_into_jobs_and_put_back_in_order(client, translate):
    """Longer than a text (200) and a request (500 characters, 4 texts) may be: split at line breaks and
    sentence ends, sent as several jobs, reassembled with every separator."""
    lines = [f"Ein Hund rennt {n} Mal über die Wiese. Eine Frau sitzt auf der Bank." for n in range(24)]
    text = "\n".join(lines) + "\n"
    content, _ = translated_file(client, "lang.txt", text.encode())
    out = content.decode()
    assert out.count("\n") == text.count("\n") and out.endswith("\n")
    expected = "".join(translate(piece) for piece in split_long(text, LIMITS["max_text_chars"]))
    assert out == expected


def test_html_round_trip(client, translate):
    markup = ('<!DOCTYPE html>\n<html><body><p class="a">Ein Hund rennt.</p>\n<p>Eine <b>Katze</b> schläft.</p>'
              '<script>var s = "<b>Hund</b>";</script><code>Hund</code></body></html>\n')
    assert len(markup) <= LIMITS["max_text_chars"]  # so that /translate takes it whole, for the comparison
    content, download = translated_file(client, "seite.html", markup.encode())
    assert content.decode() == translate(markup, "html")  # the engine's format=html, node for node
    assert content.decode().startswith('<!DOCTYPE html>\n<html><body><p class="a">')
    assert '<script>var s = "<b>Hund</b>";</script><code>Hund</code>' in content.decode()
    assert "Ein Hund rennt" not in content.decode() and "</p>\n<p>" in content.decode()
    assert download.headers["content-type"].startswith("text/html")
    assert download.headers["content-security-policy"] == "sandbox"


def test_srt_keeps_numbers_and_timestamps(client, translate):
    srt = ("1\r\n00:00:01,000 --> 00:00:03,500\r\nEin Mann fährt mit dem Fahrrad\r\ndurch die Stadt.\r\n\r\n"
           "2\r\n00:00:04,000 --> 00:00:06,000 X1:10 X2:20\r\n- Zwei Hunde spielen.\r\n- <i>Eine Frau lacht.</i>\r\n"
           "\r\n3\r\n00:00:07,000 --> 00:00:08,000\r\n42\r\n")
    content, _ = translated_file(client, "film.srt", srt.encode())
    blocks = content.decode().split("\r\n\r\n")
    assert len(blocks) == 3
    first, second, third = (block.split("\r\n") for block in blocks)
    assert first[:2] == ["1", "00:00:01,000 --> 00:00:03,500"] and len(first) == 4
    assert " ".join(first[2:]).split() == translate("Ein Mann fährt mit dem Fahrrad durch die Stadt.").split()
    assert second[:2] == ["2", "00:00:04,000 --> 00:00:06,000 X1:10 X2:20"]
    assert second[2] == "- " + translate("Zwei Hunde spielen.")
    assert second[3] == "- <i>" + translate("Eine Frau lacht.") + "</i>"
    assert third == ["3", "00:00:07,000 --> 00:00:08,000", "42", ""]


def make_docx() -> bytes:
    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Ein Mann liest eine Zeitung."
    document.add_heading("Zwei Hunde spielen im Schnee.", level=1)
    paragraph = document.add_paragraph("Eine Frau sitzt ", style="List Bullet")
    bold = paragraph.add_run("auf einer Bank")
    bold.bold = True
    paragraph.add_run(" im Park.")
    split = document.add_paragraph("Ein Hund rennt ")
    split.add_run("über die Wiese.")  # same formatting in two runs (as Word saves it): one text
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = "Ein Kind lacht."
    table.cell(0, 1).text = "2024"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_keeps_structure_and_styling(client, translate):
    content, download = translated_file(client, "Bericht.docx", make_docx())
    assert download.headers["content-disposition"] == 'attachment; filename="Bericht_en.docx"'
    result = docx.Document(io.BytesIO(content))
    heading, bullet, split = result.paragraphs
    assert heading.style.name == "Heading 1" and heading.text == translate("Zwei Hunde spielen im Schnee.")
    assert bullet.style.name == "List Bullet"
    assert [run.bold for run in bullet.runs] == [None, True, None]
    assert [run.text for run in bullet.runs] == [translate("Eine Frau sitzt "), translate("auf einer Bank"),
                                                 translate(" im Park.")]
    assert [run.text for run in split.runs] == [translate("Ein Hund rennt über die Wiese."), ""]
    assert result.tables[0].cell(0, 0).text == translate("Ein Kind lacht.")
    assert result.tables[0].cell(0, 1).text == "2024"
    assert result.sections[0].header.paragraphs[0].text == translate("Ein Mann liest eine Zeitung.")


def make_odt() -> bytes:
    document = OdfDocument("text")
    body = document.body
    body.clear()
    body.append(Header(1, "Zwei Hunde spielen im Schnee."))
    paragraph = Paragraph("Eine Frau sitzt")
    paragraph.append(Span("auf einer Bank", style="Emphasis"))
    paragraph.append(" im Park.")
    body.append(paragraph)
    body.append(Paragraph("Ein Hund rennt über die Wiese."))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_odt_keeps_structure_and_styling(client, translate):
    original = make_odt()
    content, download = translated_file(client, "brief.odt", original)
    assert download.headers["content-type"] == documents.MEDIA_TYPES[".odt"]
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        first = package.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert package.read("mimetype") == documents.ODT_MEDIA_TYPE.encode()
    result = OdfDocument(io.BytesIO(content))
    heading = result.body.get_header()
    assert str(heading.level) == "1" and heading.text_recursive == translate("Zwei Hunde spielen im Schnee.")
    paragraph, plain = result.body.get_paragraphs()
    span = paragraph.get_span()
    assert span.style == "Emphasis" and span.text == translate("auf einer Bank")
    assert plain.text_recursive == translate("Ein Hund rennt über die Wiese.")
    with zipfile.ZipFile(io.BytesIO(original)) as before, zipfile.ZipFile(io.BytesIO(content)) as after:
        assert set(before.namelist()) == set(after.namelist())
        for name in set(before.namelist()) - {"content.xml", "styles.xml"}:  # the rest of the package as it was
            assert before.read(name) == after.read(name), name


def test_auto_source_and_a_file_already_in_the_target_language(client, translate):
    text = "Ein Hund rennt über die Wiese. Zwei Frauen sitzen auf einer Bank.\n"
    auto, _ = translated_file(client, "auto.txt", text.encode(), source="auto")
    assert auto.decode() == translate(text)
    english = "A man is sitting on a bench in the park.\n"
    unchanged, _ = translated_file(client, "english.txt", english.encode(), source="auto")
    assert unchanged.decode() == english


def test_source_and_target_from_the_query_string(client, translate):
    """A mix: the file in the multipart body, the languages in the query string."""
    text = "Ein Hund rennt über die Wiese.\n"
    response = client.post("/translate_file?source=de&target=en", files={"file": ("q.txt", text.encode())})
    assert response.status_code == 200, response.text
    assert client.get(response.json()["translatedFileUrl"]).content.decode() == translate(text)
    form_wins = client.post("/translate_file?source=xx&target=en", data={"source": "de"},
                            files={"file": ("q.txt", text.encode())})  # LibreTranslate reads the form's source
    assert form_wins.status_code == 200, form_wins.text


def test_api_keys(served_models_dir):
    key = "alpha-key-0123456789"
    with running_service(served_models_dir, api_keys=[key], auth_failures_per_minute=0) as url, \
            httpx.Client(base_url=url, timeout=120) as keyed:
        assert_error(upload(keyed, "a.txt", b"Ein Hund."), 401, "API key")
        assert_error(upload(keyed, "a.txt", b"Ein Hund.", api_key="wrong-key-0123456789"), 403, "invalid API key")
        assert_error(keyed.post("/translate_file"), 401, "API key")  # before anything else is looked at
        accepted = upload(keyed, "a.txt", b"Ein Hund.", api_key=key)
        assert accepted.status_code == 200, accepted.text
        by_header = keyed.post("/translate_file?source=de&target=en", files={"file": ("a.txt", b"Ein Hund.")},
                               headers={"Authorization": f"Bearer {key}"})
        assert by_header.status_code == 200, by_header.text
        assert keyed.get(accepted.json()["translatedFileUrl"]).status_code == 200  # the URL is the credential


# ---- requests LibreTranslate refuses, files that are not what they claim ----------------------------------------

BOUNDARY = "b0undary"
EMPTY_NAME = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="source"\r\n\r\nde\r\n'
              f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="target"\r\n\r\nen\r\n'
              f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename=""\r\n'
              f'Content-Type: application/octet-stream\r\n\r\n\r\n--{BOUNDARY}--\r\n').encode()  # no file chosen


@pytest.mark.parametrize("send, status, words", [
    (lambda c: c.post("/translate_file", data={"source": "de", "target": "en"}), 400,
     "^Invalid request: missing file parameter$"),
    (lambda c: c.post("/translate_file"), 400, "^Invalid request: missing file parameter$"),
    (lambda c: c.post("/translate_file", data={"target": "en"}, files={"file": ("a.txt", b"Hallo")}), 400,
     "^Invalid request: missing source parameter$"),
    (lambda c: c.post("/translate_file", data={"source": "de"}, files={"file": ("a.txt", b"Hallo")}), 400,
     "^Invalid request: missing target parameter$"),
    (lambda c: c.post("/translate_file", content=EMPTY_NAME, headers={"content-type": f"multipart/form-data; "
                                                                                     f"boundary={BOUNDARY}"}),
     400, "^Invalid request: empty file$"),
    (lambda c: upload(c, "program.exe", b"MZ\x90\x00"), 400, "^Invalid request: file format not supported"),
    (lambda c: upload(c, "noextension", b"Hallo"), 400, "^Invalid request: file format not supported"),
    (lambda c: c.post("/translate_file", data={"source": "de", "target": "en", "file": "Hallo"}), 400,
     "file must be a file upload"),
    (lambda c: upload(c, "a.txt", b"Hallo", target="zz"), 400, "target language 'zz' is not supported"),
    (lambda c: upload(c, "a.txt", b"Hallo", source="zz"), 400, "source language 'zz' is not supported"),
    (lambda c: upload(c, "a.txt", b"Hallo", source="en", target="en"), 400, "both en"),
    (lambda c: c.post("/translate_file", json={"source": "de", "target": "en", "file": "Hallo"}), 400,
     "file must be a file upload"),
])
def test_request_errors(client, send, status, words):
    assert_error(send(client), status, words)


def zip_with(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        for name, data in members.items():
            package.writestr(name, data)
    return out.getvalue()


def corrupted_crc(data: bytes) -> bytes:
    """The package with one byte of content.xml's / document.xml's compressed data changed."""
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        info = next(i for i in package.infolist() if i.filename in ("word/document.xml", "content.xml"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    damaged = bytearray(data)
    damaged[start + info.compress_size // 2] ^= 0xFF
    return bytes(damaged)


def with_dtd(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        members = {info.filename: package.read(info) for info in package.infolist()}
    members["word/document.xml"] = members["word/document.xml"].replace(
        b"?>", b'?>\n<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>', 1)
    return zip_with(members)


@pytest.mark.parametrize("filename, content, words", [
    ("text.docx", b"This is plain text, not a Word file.", r"\.docx document: it is not a zip archive"),
    ("text.odt", b"Ein Hund.", r"\.odt document: it is not a zip archive"),
    ("other.docx", make_odt(), "not a Word document"),
    ("other.odt", make_docx(), "not an OpenDocument file"),
    ("empty.docx", b"", "not a zip archive"),
    ("random.docx", zip_with({"hello.txt": b"Hallo"}), "not a Word document"),
    ("spreadsheet.odt", zip_with({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet",
                                  "content.xml": b"<x/>"}), "not an OpenDocument text document"),
    ("broken-xml.odt", zip_with({"mimetype": b"application/vnd.oasis.opendocument.text",
                                 "content.xml": b"<office:document-content"}), "not well-formed XML"),
    ("damaged.docx", corrupted_crc(make_docx()), "damaged zip archive"),
    ("damaged.odt", corrupted_crc(make_odt()), "damaged zip archive"),
    ("entities.docx", with_dtd(make_docx()), "declares a DTD"),
    ("latin1.txt", "Ein Hund läuft über die Straße.".encode("latin-1"), "not UTF-8 text"),
    ("binary.txt", b"\x00\x01\x02PNG", "binary data"),
    ("page.html", b"<p>\xff\xfe</p>", "not UTF-8 text"),
    ("notes.srt", "Ein Hund rennt.\nZwei Katzen.".encode(), "not SubRip: line 1 should be a cue number"),
    ("nostamp.srt", b"1\nEin Hund rennt.\n", "not SubRip: line 2 should be a timestamp line"),
])
def test_corrupt_and_mislabelled_files_get_a_400_naming_the_problem(client, filename, content, words):
    assert_error(upload(client, filename, content), 400, words)


# ---- limits ------------------------------------------------------------------------------------------------------

def test_file_size_limit(client):
    big = upload(client, "big.txt", b"Ein Hund. " * 10_001)
    assert_error(big, 413, r"the file has 100010 bytes \(at most 100000\)")
    body = upload(client, "huge.txt", b"x" * 250_000)  # over MT_MAX_BODY_BYTES: refused before it is parsed
    assert_error(body, 413, "200000 bytes")


def test_character_limit(client):
    text = "Ein Hund rennt. " * 200  # 3200 characters of text: over MT_MAX_FILE_CHARS (3000), under the byte limit
    assert_error(upload(client, "lang.txt", text.encode()), 400, r"3200 characters of text \(at most 3000\)")
    numbers = ("12345 " * 1000).encode()  # letterless text is copied, not counted
    content, _ = translated_file(client, "zahlen.txt", numbers)
    assert content == numbers


def test_unpacked_size_limit(client):
    with zipfile.ZipFile(io.BytesIO(make_docx())) as package:
        members = {info.filename: package.read(info) for info in package.infolist()}
    members["word/media/padding.bin"] = b"\x00" * 3_000_000  # compresses to a few kB: a small zip bomb
    bomb = zip_with(members)
    assert len(bomb) < LIMITS["max_file_bytes"]
    assert_error(upload(client, "bomb.docx", bomb), 413, r"unpacks to \d+ bytes \(at most 2000000\)")


def test_plan_respects_every_request_limit():
    from service.config import Settings

    settings = Settings(max_texts=3, max_text_chars=50, max_request_chars=120, max_queue_sentences=8)
    units = ["Ein Hund. " * 12, "", "42", "Eine Katze.", "Zwei Frauen lachen laut. " * 3]
    work = plan(units, settings)
    for texts in work.jobs:
        assert len(texts) <= 3 and sum(map(len, texts)) <= 120 and all(len(t) <= 50 for t in texts)
    sent = [text for texts in work.jobs for text in texts]
    assert "".join(sent) == units[0] + units[3] + units[4]  # letterless units are not sent
    assert work.assemble([t.upper() for t in sent]) == [units[0].upper(), "", "42", units[3].upper(),
                                                        units[4].upper()]


# ---- expiry and the download route -------------------------------------------------------------------------------

def stored_name(response: httpx.Response) -> str:
    return NAME.search(response.json()["translatedFileUrl"]).group(1)


def test_files_expire_and_are_deleted(client, files_dir):
    fresh = upload(client, "a.txt", b"Ein Hund rennt.")
    name = stored_name(fresh)
    assert client.get(f"/download_file/{name}").status_code == 200
    assert (files_dir / name).exists()
    old = time.time() - 60
    os.utime(files_dir / name, (old, old))  # as if it had been stored a minute ago (MT_FILES_TTL_S is 4)
    assert_error(client.get(f"/download_file/{name}"), 404, "expired")
    assert not (files_dir / name).exists()
    # never downloaded: the sweeper deletes it on its own (every TTL / 2)
    idle = stored_name(upload(client, "b.txt", b"Ein Hund rennt."))
    wait_until(lambda: not (files_dir / idle).exists(), "the expired file to be swept", timeout=30)
    assert_error(client.get(f"/download_file/{idle}"), 404, "expired")


def test_client_file_names_never_reach_the_filesystem_unchecked(client, files_dir):
    for filename in ("../../etc/evil name ü.txt", "..\\..\\Windows\\system.ini.txt", "/tmp/x/y.txt", "....txt",
                     "a;b\"c.txt", "ÄÖÜ.txt"):
        response = upload(client, filename, b"Ein Hund rennt.")
        assert response.status_code == 200, (filename, response.text)
        name = stored_name(response)
        assert (files_dir / name).is_file() and (files_dir / name).parent == files_dir
    assert stored_name(upload(client, "../../etc/evil name ü.txt", b"Hallo")).endswith(".evil_name_u_en.txt")
    assert stored_name(upload(client, "ÄÖÜ.txt", b"Hallo")).endswith(".AOU_en.txt")
    assert stored_name(upload(client, "....txt", b"Hallo")).endswith(".file_en.txt")
    assert not list(files_dir.glob("*evil name*")) and not list(files_dir.parent.glob("*.ini*"))


@pytest.mark.parametrize("path, status", [
    ("/download_file/%2E%2E", 400),  # (httpx would resolve a literal "..")
    ("/download_file/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", 404),  # a slash never matches the route
    ("/download_file/..%5C..%5Cetc%5Cpasswd", 400),
    ("/download_file/passwd", 400),
    ("/download_file/0123456789abcdef0123456789abcdef.x_en.exe", 400),
    ("/download_file/0123456789ABCDEF0123456789ABCDEF.x_en.txt", 400),
    ("/download_file/0123456789abcdef0123456789abcdef.x_en.txt", 404),  # our shape, never stored
    ("/download_file/0123456789abcdef0123456789abcdef.x%00_en.txt", 400),
    ("/download_file/%00", 400),
])
def test_download_route_serves_only_its_own_names(client, path, status):
    response = client.get(path)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}


def test_planted_files_are_not_served(client, files_dir):
    (files_dir / "secret.txt").write_text("not for download")
    assert_error(client.get("/download_file/secret.txt"), 400, "^Invalid filename$")
    link = files_dir / "0123456789abcdef0123456789abcdef.link_en.txt"
    link.symlink_to("/etc/passwd")
    assert_error(client.get(f"/download_file/{link.name}"), 404, "not found")
    assert (files_dir / "secret.txt").exists()  # the sweeper leaves what is not its own
