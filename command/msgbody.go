package command

import (
	"bytes"
	"encoding/json"
)

// Message element validation, reference §3. MsgBody is an array of
// {"MsgType": …, "MsgContent": {…}}; each type has its own fields. A field
// listed here must have the given JSON kind when present and must be present
// when required; fields not listed pass through untouched (newer SDKs add
// some), so an app's extra keys are not refused.

type kind int

const (
	kString kind = iota
	kNumber
	kArray
)

type field struct {
	name     string
	kind     kind
	required bool
	// flag, when non-zero, is the only value allowed (Download_Flag must be 2).
	flag int64
}

var elementFields = map[string][]field{
	"TIMTextElem":     {{name: "Text", kind: kString, required: true}},
	"TIMFaceElem":     {{name: "Index", kind: kNumber, required: true}, {name: "Data", kind: kString}},
	"TIMLocationElem": {{name: "Desc", kind: kString}, {name: "Latitude", kind: kNumber, required: true}, {name: "Longitude", kind: kNumber, required: true}},
	"TIMCustomElem":   {{name: "Data", kind: kString}, {name: "Desc", kind: kString}, {name: "Ext", kind: kString}, {name: "Sound", kind: kString}},
	"TIMSoundElem": {
		{name: "Url", kind: kString}, {name: "UUID", kind: kString, required: true}, {name: "Size", kind: kNumber},
		{name: "Second", kind: kNumber}, {name: "Download_Flag", kind: kNumber, flag: 2},
	},
	"TIMImageElem": {
		{name: "UUID", kind: kString, required: true}, {name: "ImageFormat", kind: kNumber},
		{name: "ImageInfoArray", kind: kArray, required: true},
	},
	"TIMFileElem": {
		{name: "Url", kind: kString}, {name: "UUID", kind: kString, required: true}, {name: "FileSize", kind: kNumber},
		{name: "FileName", kind: kString}, {name: "Download_Flag", kind: kNumber, flag: 2},
	},
	"TIMVideoFileElem": {
		{name: "VideoUrl", kind: kString}, {name: "VideoUUID", kind: kString, required: true}, {name: "VideoSize", kind: kNumber},
		{name: "VideoSecond", kind: kNumber}, {name: "VideoFormat", kind: kString}, {name: "VideoDownloadFlag", kind: kNumber, flag: 2},
		{name: "ThumbUrl", kind: kString}, {name: "ThumbUUID", kind: kString, required: true}, {name: "ThumbSize", kind: kNumber},
		{name: "ThumbWidth", kind: kNumber}, {name: "ThumbHeight", kind: kNumber}, {name: "ThumbFormat", kind: kString},
		{name: "ThumbDownloadFlag", kind: kNumber, flag: 2},
	},
	"TIMRelayElem": {
		{name: "Title", kind: kString}, {name: "MsgNum", kind: kNumber}, {name: "CompatibleText", kind: kString},
		{name: "AbstractList", kind: kArray}, {name: "MsgList", kind: kArray}, {name: "JsonMsgKey", kind: kString},
	},
}

var imageInfoFields = []field{
	{name: "Type", kind: kNumber, required: true}, {name: "Size", kind: kNumber},
	{name: "Width", kind: kNumber, required: true}, {name: "Height", kind: kNumber, required: true},
	{name: "URL", kind: kString, required: true},
}

// Element is one decoded MsgBody element.
type Element struct {
	MsgType    string          `json:"MsgType"`
	MsgContent json.RawMessage `json:"MsgContent"`
}

// parseMsgBody validates raw as a MsgBody and returns its elements. Codes:
// 90007 not an array, 90002 empty or not made of objects, 90010 an element
// that does not follow its type's format.
func parseMsgBody(raw json.RawMessage) ([]Element, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil, Errorf(CodeMsgBodyNotArray, "MsgBody must be an array of message elements")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, Errorf(CodeMsgBody, "MsgBody is not valid: %v", err)
	}
	if len(items) == 0 {
		return nil, Errorf(CodeMsgBody, "MsgBody is empty")
	}
	els := make([]Element, 0, len(items))
	custom := 0
	for i, it := range items {
		f, err := decodeFields(it)
		if err != nil {
			return nil, Errorf(CodeMsgBody, "MsgBody[%d] is not an object", i)
		}
		// Message elements are stored and delivered as sent, so their
		// names must be spelled exactly (docs/rest.md, "Field names").
		_, exact := f["MsgType"]
		typ, present, ok := f.str("MsgType")
		if !exact || !present || !ok {
			return nil, Errorf(CodeElement, "MsgBody[%d].MsgType must be a string", i)
		}
		spec, known := elementFields[typ]
		if !known {
			return nil, Errorf(CodeElement, "MsgBody[%d].MsgType %q is not a known element type", i, typ)
		}
		if typ == "TIMCustomElem" {
			if custom++; custom > 1 {
				return nil, Errorf(CodeElement, "a message may carry at most one TIMCustomElem")
			}
		}
		content, err := decodeFields(f["MsgContent"])
		if err != nil || content == nil {
			return nil, Errorf(CodeElement, "MsgBody[%d].MsgContent must be an object", i)
		}
		if e := checkFields(content, spec, i, typ); e != nil {
			return nil, e
		}
		if typ == "TIMImageElem" {
			var infos []fields
			if err := json.Unmarshal(content["ImageInfoArray"], &infos); err != nil || len(infos) == 0 {
				return nil, Errorf(CodeElement, "MsgBody[%d].ImageInfoArray must be a non-empty array of objects", i)
			}
			for _, info := range infos {
				if e := checkFields(info, imageInfoFields, i, "ImageInfoArray"); e != nil {
					return nil, e
				}
				if t, _, _ := info.integer("Type", 1, 3); t < 1 || t > 3 {
					return nil, Errorf(CodeElement, "MsgBody[%d].ImageInfoArray Type must be 1, 2 or 3", i)
				}
			}
		}
		els = append(els, Element{MsgType: typ, MsgContent: f["MsgContent"]})
	}
	return els, nil
}

func checkFields(content fields, spec []field, i int, typ string) *Error {
	for _, fd := range spec {
		raw, present := content[fd.name]
		if !present || bytes.Equal(raw, []byte("null")) {
			if fd.required {
				return Errorf(CodeElement, "MsgBody[%d] %s needs %s", i, typ, fd.name)
			}
			continue
		}
		var good bool
		switch fd.kind {
		case kString:
			_, _, good = content.str(fd.name)
		case kNumber:
			var n float64
			good = json.Unmarshal(raw, &n) == nil
			if good && fd.flag != 0 && n != float64(fd.flag) {
				return Errorf(CodeElement, "MsgBody[%d] %s.%s must be %d", i, typ, fd.name, fd.flag)
			}
		case kArray:
			good = len(raw) > 0 && raw[0] == '['
		}
		if !good {
			return Errorf(CodeElement, "MsgBody[%d] %s.%s has the wrong type", i, typ, fd.name)
		}
	}
	return nil
}
