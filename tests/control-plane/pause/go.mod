module helpdesk-mail-operator/control-plane/pause

go 1.24.0
