# Entry points a newcomer needs. The scripts do the work; see README.md.
.PHONY: demo test chart-crd help

help:
	@echo "make demo       run the end-to-end demo (builds tools, starts a local control plane)"
	@echo "make test       run every test (scripts/test)"
	@echo "make chart-crd  copy crds/ into the Helm chart after the CRD changes"

demo:
	scripts/demo

test:
	scripts/test

chart-crd:
	cp crds/helpdesktenants.mail.helpdesk.io.yaml charts/helpdesk-mail-operator/files/
