# Entry points a newcomer needs. The scripts do the work; see README.md.
.PHONY: help demo test crd chart-crd

CRD := helpdesktenants.mail.helpdesk.io.yaml

help:
	@echo "make demo       run the end-to-end demo (builds tools, starts a local control plane)"
	@echo "make test       run every test (scripts/test)"
	@echo "make crd        regenerate crds/ from the Rust type and copy it into the Helm chart"
	@echo "make chart-crd  copy crds/ into the Helm chart"

demo:
	scripts/demo

test:
	scripts/test

crd:
	cargo run --quiet --locked -- crd > crds/$(CRD).tmp
	mv crds/$(CRD).tmp crds/$(CRD)
	$(MAKE) --no-print-directory chart-crd

chart-crd:
	cp crds/$(CRD) charts/helpdesk-mail-operator/files/$(CRD)
