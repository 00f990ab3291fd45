"""Rebuild ``sentences.txt``: sentences from the docstrings of Python's standard library.

Real English text that ships offline with the project. Run with the Python whose standard
library you want to read (the committed file came from CPython 3.11):
``python objectives/tasks/data/make_sentences.py > objectives/tasks/data/sentences.txt``
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
import sys
import warnings

MODULES = (
    "abc argparse array ast asyncio base64 bisect calendar collections concurrent.futures "
    "configparser contextlib copy csv dataclasses datetime decimal difflib email enum "
    "fileinput fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac "
    "html http.client http.server imaplib inspect io ipaddress itertools json logging lzma "
    "mailbox mimetypes multiprocessing numbers operator optparse os pathlib pickle pkgutil "
    "platform plistlib poplib pprint profile queue quopri random re sched secrets selectors "
    "shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl statistics string "
    "struct subprocess sysconfig tarfile tempfile textwrap threading timeit tokenize trace "
    "traceback types typing unittest urllib.parse urllib.request uuid warnings weakref "
    "xml.dom.minidom xml.etree.ElementTree zipfile zlib"
).split()
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
WORD = re.compile(r"[A-Za-z]{2,}")


def docstrings(module: object) -> list[str]:
    found = [inspect.getdoc(module) or ""]
    for _, member in sorted(vars(module).items()):
        if getattr(member, "__module__", None) == module.__name__:  # type: ignore[attr-defined]
            found.append(inspect.getdoc(member) or "")
            if inspect.isclass(member):
                found += [inspect.getdoc(m) or "" for _, m in sorted(vars(member).items()) if callable(m)]
    return found


def sentences(text: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        if not flat or any(c in flat for c in ">>>|{}[]=_`\\") or flat.startswith(("-", "*", ":")):
            continue
        for sentence in SENTENCE_END.split(flat):
            words = sentence.split()
            if 8 <= len(words) <= 40 and sentence[0].isupper() and sentence.endswith(".") \
                    and len(WORD.findall(sentence)) >= 0.8 * len(words):
                out.append(sentence)
    return out


def main() -> None:
    warnings.simplefilter("ignore")
    seen: dict[str, None] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for doc in docstrings(module):
            for sentence in sentences(doc):
                seen.setdefault(sentence, None)
    chosen = sorted(seen)
    random.Random(0).shuffle(chosen)
    sys.stdout.write("\n".join(chosen[:2000]) + "\n")


if __name__ == "__main__":
    main()
