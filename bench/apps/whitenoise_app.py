"""The hello app behind WhiteNoise, serving $BENCH_STATIC_DIR at /static/ (the static rows of
bench/run.py), as a Django or Flask deployment without nginx would."""

import os

from hello import app as hello
from whitenoise import WhiteNoise

app = WhiteNoise(hello, root=os.environ["BENCH_STATIC_DIR"], prefix="static/", max_age=60)
