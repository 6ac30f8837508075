;;; SPDX-License-Identifier: GPL-3.0-or-later
;;; Answer an invitation as Gnus does when its Accept/Tentative/Decline button is pressed (batch mode).
;;; Args: MESSAGE-FILE PORT BUTTON ("Accept", "Tentative" or "Decline") IDENTITY
(require 'cl-lib)
(require 'gnus-icalendar)
(require 'mm-decode)
(require 'message)
(require 'smtpmail)

(defun gnus-answer--calendar (handle)
  "The first text/calendar part in the MIME tree HANDLE, as Gnus's article view finds it."
  (cond ((bufferp (car handle))
         (and (equal (mm-handle-media-type handle) "text/calendar") handle))
        ((stringp (car handle)) (cl-some #'gnus-answer--calendar (cdr handle)))))

(let* ((file (nth 0 command-line-args-left))
       (port (string-to-number (nth 1 command-line-args-left)))
       (button (nth 2 command-line-args-left))
       (identity (nth 3 command-line-args-left))
       (article (get-buffer-create "*article*")))
  (setq command-line-args-left nil)
  (setq user-mail-address identity user-full-name "Grace Hopper"
        message-send-mail-function #'smtpmail-send-it smtpmail-smtp-server "127.0.0.1"
        smtpmail-smtp-service port smtpmail-stream-type 'plain message-interactive nil
        gnus-icalendar-org-enabled-p nil)
  (with-current-buffer article
    (insert-file-contents-literally file)
    (goto-char (point-min))
    (while (search-forward "\r\n" nil t) (replace-match "\n"))
    (let* ((handles (mm-dissect-buffer t))
           (handle (gnus-answer--calendar handles))
           (event (gnus-icalendar-with-decoded-handle handle
                    (gnus-icalendar-event-from-buffer (current-buffer) (gnus-icalendar-identities))))
           (action (assoc button (gnus-icalendar-event:inline-reply-buttons event handle))))
      (unless action (error "no %s button" button))
      ;; Gnus replies from its summary buffer; here the article buffer is the whole of Gnus.
      (let ((gnus-summary-buffer article))
        (cl-letf (((symbol-function 'gnus-summary-reply)
                   (lambda (&rest _) (set-buffer article) (message-reply))))
          (apply (nth 1 action) (nthcdr 2 action))))
      (message "ANSWERED %s" button))))
